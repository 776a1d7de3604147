"""train_dada.py on tiny procedural data: every setup of Table 3 end to end, what each
discriminator sees, the official update order (generator steps leave D alone and D steps leave
the network alone), no target label in any supervised loss, the depth target."""
import math
import json
import os

import pytest
import torch

import train_dada
from lib import engine, losses

TINY = ["--size", "32", "64", "--batch-size", "2", "--proc-length", "8", "--workers", "0",
        "--eval-batches", "1", "--log-every", "1", "--device", "cpu", "--backbone", "resnet-tiny"]


def run(out_dir, *extra, iters=2):
    args = train_dada.get_args_parser().parse_args(
        TINY + ["--iters", str(iters), "--output-dir", str(out_dir), *extra])
    return train_dada.main(args)


@pytest.mark.parametrize("setup", list(train_dada.SETUPS))
def test_every_setup_runs_end_to_end(tmp_path, setup):
    metrics = run(tmp_path, "--setup", setup, iters=1)
    assert metrics["setup"] == setup and metrics["selection"] == "last"
    assert 0 <= metrics["target"]["mIoU"] <= 100 and len(metrics["target"]["per_class"]) == 11
    ckpt = torch.load(tmp_path / "checkpoint.pth", weights_only=True)
    discs = {k for k in ckpt["models"] if k.startswith("d_")}
    assert discs == {f"d_{k}" for k in train_dada.discriminator_names(
        train_dada.resolve_setup(train_dada.get_args_parser().parse_args(["--setup", setup])))}
    assert len(discs) == {"s1": 0, "s6": 2}.get(setup, 1)


def _args(setup):
    return train_dada.resolve_setup(train_dada.get_args_parser().parse_args(["--setup", setup]))


def test_discriminators_see_i_z_or_their_product():
    """Eq. 5-6: S2 adapts I = -P log P / log C, S4 the inverse depth Z, S7 I x Z; S6 both apart."""
    logits, z = torch.randn(2, 5, 4, 6), torch.rand(2, 4, 6)
    surprisal = losses.surprisal_map(logits)
    maps = {s: train_dada.discriminator_inputs(logits, z, _args(s)) for s in ("s2", "s4", "s6", "s7")}
    assert set(maps["s2"]) == {"surprisal"} and torch.equal(maps["s2"]["surprisal"], surprisal)
    assert set(maps["s4"]) == {"depth"} and torch.equal(maps["s4"]["depth"], z[:, None])
    assert set(maps["s6"]) == {"surprisal", "depth"}
    assert set(maps["s7"]) == {"fused"} and torch.allclose(maps["s7"]["fused"], surprisal * z[:, None])
    # A uniform prediction has I = 1/C per class: its sum over classes is 1 at every pixel.
    uniform = losses.surprisal_map(torch.zeros(1, 5, 2, 3)).sum(1)
    assert torch.allclose(uniform, torch.ones(1, 2, 3))


def test_depth_target_is_the_official_inverse_depth_in_metres():
    """65536 / (depth_cm + 1) (official SYNTHIA loader) with depth in metres; 0 is invalid."""
    target, mask = train_dada.inverse_depth_target(torch.tensor([0.0, 1.0, 10.0]))
    assert target[1].item() == pytest.approx(65536 / 101) and target[2].item() == pytest.approx(65536 / 1001)
    assert mask.tolist() == [False, True, True]
    scaled, _ = train_dada.inverse_depth_target(torch.tensor([0.0, 1.0, 10.0]), 1 / 64)
    assert scaled[1].item() == pytest.approx(1024 / 101)   # --depth-target-scale multiplies it


def test_setup_switches_and_their_errors():
    a = _args("s4")
    assert (a.surprisal_adapt, a.depth_adapt, a.feat_fusion, a.dada_fusion, a.depth_block) == \
        (False, True, False, False, True)
    b = train_dada.resolve_setup(train_dada.get_args_parser().parse_args(["--setup", "s2", "--feat-fusion"]))
    assert b.feat_fusion and b.surprisal_adapt and b.depth_block
    with pytest.raises(engine.UserError, match="--dada-fusion fuses surprisal and depth"):
        train_dada.resolve_setup(train_dada.get_args_parser().parse_args(["--setup", "s2", "--dada-fusion"]))
    with pytest.raises(engine.UserError, match="--depth-target-scale must be positive, got 0.0"):
        train_dada.resolve_setup(_preset("--depth-target-scale", "0"))


def _setup_step(tmp_path, setup="s7"):
    """Network, discriminators and one source / target batch, as main() builds them."""
    from lib.args import apply_preset
    args = train_dada.get_args_parser().parse_args(
        TINY + ["--setup", setup, "--iters", "1", "--output-dir", str(tmp_path)])
    apply_preset(args, train_dada.PRESETS, [args.src, args.tgt], log=None)
    train_dada.resolve_setup(args)
    engine.init_distributed(args)
    data_a, data_b = train_dada.datasets(args)
    _, net, discs, optims = train_dada.build(args, 11)
    src = next(engine.InfiniteLoader(data_a, 2, args, domain=0))
    tgt = next(engine.InfiniteLoader(data_b, 2, args, domain=1))
    return args, train_dada.RawOutputs(net).train(), net, discs, optims, src, tgt


def _grads(module):
    return [p.grad for p in module.parameters() if p.requires_grad]


@pytest.mark.parametrize("setup", ["s2", "s6", "s7"])
def test_generator_losses_leave_d_alone_and_d_losses_leave_the_network_alone(tmp_path, setup):
    """The official order: the network's losses run with the discriminators frozen, and the
    discriminators learn from detached maps."""
    args, model, net, discs, optims, src, tgt = _setup_step(tmp_path, setup)
    amp = engine.Amp("off", args.device)
    terms, maps_s, maps_t = train_dada.generator_step(model, discs, src, tgt, amp, args)
    assert "adv" in terms and all(g is None for d in discs.values() for g in _grads(d))
    assert any(g is not None and g.abs().sum() > 0 for g in _grads(net))
    assert all(p.requires_grad for d in discs.values() for p in d.parameters())   # unfrozen again
    for p in net.parameters():
        p.grad = None
    train_dada.discriminator_step(discs, maps_s, maps_t, amp)
    assert all(g is None for g in _grads(net))
    assert all(g is not None for d in discs.values() for g in _grads(d))


def test_discriminator_loss_is_advents_halves_and_dadas_sum_up_to_adams_eps():
    """discriminator_step's one backward of (L_s + L_t) / 2 gives ADVENT's gradient (train_UDA.py:
    each term halved, its own backward) exactly; DADA's train_UDA.py backpropagates the terms
    unhalved (twice the gradient), which Adam turns into the same step except where a gradient
    is as small as its eps."""
    from lib.models.discriminators import OutputDiscriminator
    torch.manual_seed(0)
    d = OutputDiscriminator(3, 8)
    m_s, m_t = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    train_dada.discriminator_step({"fused": d}, {"fused": m_s}, {"fused": m_t}, engine.Amp("off", torch.device("cpu")))
    ours = [p.grad.clone() for p in d.parameters()]

    def two_backwards(scale):
        d.zero_grad(set_to_none=True)
        (losses.bce_adv(d(m_s), 0.0) * scale).backward()
        (losses.bce_adv(d(m_t), 1.0) * scale).backward()
        return [p.grad.clone() for p in d.parameters()]
    advent, dada = two_backwards(0.5), two_backwards(1.0)
    assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(ours, advent))
    assert all(torch.allclose(2 * a, b, atol=1e-7) for a, b in zip(ours, dada))
    steps = []
    for grads in (ours, dada):
        copy = OutputDiscriminator(3, 8)
        copy.load_state_dict(d.state_dict())
        opt = torch.optim.Adam(copy.parameters(), lr=1e-4, betas=(0.9, 0.99))
        for p, g in zip(copy.parameters(), grads):
            p.grad = g.clone()
        opt.step()
        steps.append([p.detach() - q.detach() for p, q in zip(copy.parameters(), d.parameters())])
    # Adam moves each weight by about lr g / (|g| + eps): the same for g and 2 g wherever |g| is
    # well above eps (1e-8); the few weights with a gradient near eps move differently.
    big = [g.abs() > 1e-6 for g in ours]
    assert all(torch.allclose(a[m], b[m], rtol=1e-2) for a, b, m in zip(*steps, big))
    assert sum(int(m.sum()) for m in big) > 0.9 * sum(g.numel() for g in ours)


def test_no_target_label_reaches_a_supervised_loss(tmp_path, monkeypatch):
    """B's batches carry no labels at all, and CE / berHu only ever see the source's."""
    seen = []
    real_ce, real_berhu = losses.cross_entropy, losses.berhu
    monkeypatch.setattr(train_dada.losses, "cross_entropy",
                        lambda logits, target, *a, **k: (seen.append(target), real_ce(logits, target, *a, **k))[1])
    monkeypatch.setattr(train_dada.losses, "berhu",
                        lambda pred, target, *a, **k: (seen.append(target), real_berhu(pred, target, *a, **k))[1])
    args, model, net, discs, optims, src, tgt = _setup_step(tmp_path, "s7")
    assert not {"semantic", "depth"} & set(tgt)
    values = train_dada.train_step(model, discs, src, tgt, optims, engine.Amp("off", args.device), args, 0)
    assert set(values) == {"seg", "dep", "adv", "d_fused"}
    assert torch.equal(seen[0], src["semantic"])
    assert args.depth_target_scale == 1 / 64        # the cpu preset's, which this target must carry
    assert torch.equal(seen[1], train_dada.inverse_depth_target(src["depth"], args.depth_target_scale)[0])
    assert len(seen) == 2


def test_target_through_bn_control_moves_only_batchnorm_statistics(tmp_path):
    """The s1 control: target images pass in train mode with no loss, so BN running statistics
    see them while no gradient comes from them."""
    a = run(tmp_path / "plain", "--setup", "s1", "--seed", "3", iters=1)
    b = run(tmp_path / "bn", "--setup", "s1", "--seed", "3", "--target-through-bn", iters=1)
    wa = torch.load(tmp_path / "plain" / "checkpoint.pth", weights_only=True)["models"]["model"]
    wb = torch.load(tmp_path / "bn" / "checkpoint.pth", weights_only=True)["models"]["model"]
    stats = [k for k in wa if k.endswith("running_mean")]
    assert any(not torch.equal(wa[k], wb[k]) for k in stats)
    weights = [k for k in wa if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert all(torch.equal(wa[k], wb[k]) for k in weights)
    assert a["setup"] == b["setup"] == "s1"
    with pytest.raises(engine.UserError, match="BatchNorm control of source-only"):
        run(tmp_path / "bad", "--setup", "s2", "--target-through-bn", iters=1)


def test_selection_on_target_val_is_recorded(tmp_path):
    metrics = run(tmp_path, "--select-on-target-val", "--eval-every", "1", iters=2)
    assert metrics["selection"].startswith("best on proc-b val (iteration")
    assert "target labels used" in metrics["selection"]
    assert (tmp_path / "best_model.pth").is_file()
    logged = [json.loads(line) for line in open(tmp_path / "log.jsonl")]
    assert sum("target_val" in r for r in logged) == 2


def test_bench_times_the_dada_step(tmp_path):
    """tools/bench.py --only dada runs train_dada.train_step with the target at --tgt-size."""
    import os
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
    import bench
    res = bench.main(bench.get_args_parser().parse_args(
        ["--only", "dada", "--size", "32", "64", "--tgt-size", "32", "48", "--batch-size", "1",
         "--workers", "0", "--steps", "1", "--warmup", "0", "--device", "cpu", "--backbone", "resnet18"]))
    d = res["dada"]
    assert d["step_ms"] == pytest.approx(d["forward_ms"] + d["backward_ms"] + d["optimizer_ms"])
    assert d["images_per_s"] == pytest.approx(1 / (d["step_ms"] / 1000))


def test_depth_fit_tool_reports_the_source_fit(tmp_path, capsys):
    """tools/dada_depth_fit.py: the target mean and abs rel of Z against 65536 / (100 d + 1),
    and against it times the run's --depth-target-scale as main() reads it from the checkpoint,
    recomputed here in numpy from the same samples and the model's own outputs."""
    import os
    import sys

    import numpy as np
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
    import dada_depth_fit
    from lib.data import build_dataset
    run(tmp_path / "s7", "--setup", "s7", iters=1)
    net, saved = dada_depth_fit.load(str(tmp_path / "s7" / "model.pth"))
    data = build_dataset("proc-a", "val", saved["size"], None, length=4, labels=["semantic", "depth"])
    got = dada_depth_fit.fit(net, data, 1, with_depth=True)
    d = np.stack([data[i]["depth"].numpy() for i in range(4)])
    with torch.no_grad():
        _, z = train_dada.forward(train_dada.RawOutputs(net), torch.stack([data[i]["image"] for i in range(4)]))
    target, valid = 65536.0 / (100.0 * d + 1.0), d > 0
    assert got["z_target_mean"] == pytest.approx(target[valid].mean(), rel=1e-5)
    assert got["z_abs_rel"] == pytest.approx((np.abs(z.numpy() - target) / target)[valid].mean(), rel=1e-4)
    # the run's own scale (the cpu preset's 1/64), as main() reads it from the checkpoint
    assert saved["depth_target_scale"] == 1 / 64
    assert dada_depth_fit.target_scale(saved, "x") == 1 / 64
    scaled = dada_depth_fit.fit(net, data, 1, with_depth=True, scale=1 / 64)
    assert scaled["z_target_mean"] == pytest.approx(target[valid].mean() / 64, rel=1e-5)
    assert scaled["z_abs_rel"] == pytest.approx((np.abs(z.numpy() - target / 64) / (target / 64))[valid].mean(),
                                                rel=1e-4)
    dada_depth_fit.main(dada_depth_fit.get_args_parser().parse_args([str(tmp_path / "s7" / "model.pth"),
                                                                     "--batches", "1"]))
    line = capsys.readouterr().out
    assert "depth_target_scale=0.015625" in line and f"z_target_mean={target[valid].mean() / 64:.3f}" in line
    # runs before the flag: 1; under its first name: that value; not a DADA run: an error
    assert dada_depth_fit.target_scale({"lambda_dep": 1e-3}, "x") == 1.0
    assert dada_depth_fit.target_scale({"lambda_dep": 0.1, "depth_scale": 0.5}, "x") == 0.5
    with pytest.raises(engine.UserError, match="not made by train_dada.py"):
        dada_depth_fit.target_scale({}, "x")
    run(tmp_path / "s1", "--setup", "s1", iters=1)
    with pytest.raises(engine.UserError, match="no depth block"):
        dada_depth_fit.load(str(tmp_path / "s1" / "model.pth"))


# ----------------------------------------------------------------------------- official protocol
def _preset(*argv):
    from lib.args import apply_preset
    args = train_dada.get_args_parser().parse_args(list(argv))
    return apply_preset(args, train_dada.PRESETS, [args.src, args.tgt], log=None)


def test_paper_preset_trains_the_official_backbone_group_and_vistas_at_1024x768():
    """The paper preset: ADVENT's repeated backbone group stepped as PyTorch 1.2 (what produced
    the paper's numbers), Cityscapes at 1024x512, Vistas at 1024x768; cpu: each tensor once."""
    from lib.optim import RepeatedSGD
    paper = _preset("--src", "synthia", "--tgt", "cityscapes")
    assert paper.backbone_sgd == "official" and paper.tgt_resize == [512, 1024]
    assert _preset("--src", "synthia", "--tgt", "mapillary").tgt_resize == [768, 1024]
    assert _preset("--src", "synthia", "--tgt", "mapillary", "--tgt-resize", "320", "640").tgt_resize == [320, 640]
    assert _preset().backbone_sgd == "once"
    assert (paper.lambda_dep, paper.depth_target_scale) == (1e-3, 1.0)           # Sec. 4.1, official target
    assert (_preset().lambda_dep, _preset().depth_target_scale) == (0.1, 1 / 64)  # the cpu preset's
    assert _preset().iters == 300   # the no-argument run; the procedural tables pass 600:
    script = open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                               "experiments", "dada_procedural.sh")).read()
    assert 'STEPS="--iters 600 --save-every 600"' in script and "${FLAGS[$row]} $STEPS" in script
    for choice, kind, semantics in (("once", torch.optim.SGD, None), ("official", RepeatedSGD, "torch1.2"),
                                    ("official-torch2", RepeatedSGD, "torch2")):
        args = train_dada.resolve_setup(_preset(*TINY, "--backbone-sgd", choice))
        _, net, _, optims = train_dada.build(args, 11)
        opt = optims["model"]
        assert type(opt) is kind and opt.param_groups[0].get("semantics") == semantics
        if semantics:
            counts = net.official_repeats()
            assert opt.param_groups[0]["repeats"] == [counts[p] for p in opt.param_groups[0]["params"]]
            assert set(opt.param_groups[0]["repeats"]) == {1, 3, 4} and set(opt.param_groups[1]["repeats"]) == {1}


def test_official_backbone_group_runs_and_resumes(tmp_path):
    """--backbone-sgd official end to end; the checkpoint keeps the counts (resume is exact)."""
    run(tmp_path, "--backbone-sgd", "official", iters=2)
    ckpt = torch.load(tmp_path / "checkpoint.pth", weights_only=True)
    groups = ckpt["optimizers"]["model"]["param_groups"]
    assert groups[0]["semantics"] == "torch1.2" and 4 in groups[0]["repeats"]


def _vistas(tmp_path, sizes):
    """A Vistas tree: val frames of the given (H, W), every pixel road (flat)."""
    import numpy as np
    from tests import trees
    labels = [np.full(hw, 13, np.uint8) for hw in sizes]   # construction--flat--road
    trees.mapillary(tmp_path, {"val": len(sizes), "train": 0}, sizes, labels=labels)
    return str(tmp_path)


def test_vistas_official_fit_and_pad(tmp_path):
    """dada/dataset/mapillary.py: the image fitted inside 1024x768 (here 32x24) keeping its
    aspect, padded bottom / right with black; evaluation labels kept at their size, padded to
    4:3 with the official id 7 (bike lane, so 'flat'); training labels padded with 255."""
    from lib.data import build_dataset
    from lib.data import transforms as T
    from lib.data.mapillary import aspect_pad_size, fit_size
    root = _vistas(tmp_path, [(60, 100), (80, 50), (75, 100)])
    # worked by hand: 100/60 > 4/3 -> width 32, height int(60 * 0.32) = 19; 50/80 < 4/3 -> height
    # 24, width int(50 * 0.3) = 15; 4:3 itself -> 24x32. Labels: 75x100, 80x106, 75x100.
    assert [fit_size(*hw, (24, 32)) for hw in ((60, 100), (80, 50), (75, 100))] == [(19, 32), (24, 15), (24, 32)]
    assert [aspect_pad_size(*hw, (24, 32)) for hw in ((60, 100), (80, 50), (75, 100))] == \
        [(75, 100), (80, 106), (75, 100)]
    black = T.normalize(torch.zeros(3, 1, 1))
    val = build_dataset("mapillary", "val", (24, 32), root, labels=["semantic"], resize=(24, 32),
                        native_labels=True)
    raw = val.load_raw(val.records[0])
    wide, tall, exact = val[0], val[1], val[2]
    assert wide["image"].shape == (3, 24, 32) and wide["semantic"].shape == (75, 100)
    fitted = T.normalize(T.resize_sample(T.to_tensors(raw), (19, 32))["image"])
    assert torch.allclose(wide["image"][:, :19], fitted) and torch.allclose(wide["image"][:, 19:], black.expand(3, 5, 32))
    assert (wide["semantic"] == 0).all()                        # road and the padded rows: flat
    assert torch.allclose(tall["image"][:, :, 15:], black.expand(3, 24, 17)) and tall["semantic"].shape == (80, 106)
    assert exact["semantic"].shape == (75, 100) and not torch.allclose(exact["image"][:, -1:], black.expand(3, 1, 32))
    ignore = build_dataset("mapillary", "val", (24, 32), root, labels=["semantic"], resize=(24, 32),
                           native_labels=True, pad_label="ignore")[0]["semantic"]
    assert (ignore[:60] == 0).all() and (ignore[60:] == 255).all()
    low = build_dataset("mapillary", "val", (16, 32), root, labels=["semantic"], resize=(16, 32),
                        native_labels=True)[2]["semantic"]        # 2:1 (the 320x640 rows): ignored
    assert low.shape == (75, 150) and (low[:, :100] == 0).all() and (low[:, 100:] == 255).all()
    train = build_dataset("mapillary", "val", (24, 32), root, labels=["semantic"], resize=(24, 32), train=True)[0]
    assert train["image"].shape == (3, 24, 32) and (train["semantic"][:19] == 0).all()
    assert (train["semantic"][19:] == 255).all()
    stretch = build_dataset("mapillary", "val", (24, 32), root, labels=["semantic"], resize=(24, 32),
                            resize_mode="stretch")[0]
    assert stretch["semantic"].shape == (24, 32) and (stretch["semantic"] == 0).all()
    assert not torch.allclose(stretch["image"][:, 19:], black.expand(3, 5, 32))


def test_paper_preset_resizes_images_with_pil_bicubic_and_labels_nearest(tmp_path):
    """ADVENT's dataset/base_dataset.py resizes images with PIL BICUBIC and labels with NEAREST
    (DADA's mapillary.py too): under the paper preset (--image-resample bicubic) the loaders give
    PIL's own image, the labels stay PIL's NEAREST pick; the cpu preset keeps bilinear. The
    choice reaches the scoring record, so evaluate.py re-scores the same way."""
    import numpy as np
    from PIL import Image
    import evaluate
    from lib.data import build_dataset
    from lib.data import transforms as T
    from lib.data.base import DataError
    from tests import trees
    assert _preset("--src", "synthia", "--tgt", "cityscapes").image_resample == "bicubic"
    assert _preset().image_resample == "bilinear"
    trees.cityscapes(tmp_path, frames=1, size=(48, 96), splits=("val",), depth=False)
    raw = build_dataset("cityscapes", "val", (20, 40), str(tmp_path), labels=["semantic"], classes=16)
    raw = raw.load_raw(raw.records[0])
    pil = np.asarray(Image.fromarray(raw["image"]).resize((40, 20), Image.BICUBIC), np.float32) / 255
    nearest = np.asarray(Image.fromarray(raw["semantic"].astype(np.uint8)).resize((40, 20), Image.NEAREST))
    common = dict(labels=["semantic"], classes=16, resize=(20, 40))
    bicubic = build_dataset("cityscapes", "val", (20, 40), str(tmp_path), image_resample="bicubic", **common)[0]
    bilinear = build_dataset("cityscapes", "val", (20, 40), str(tmp_path), **common)[0]
    assert torch.allclose(T.denormalize(bicubic["image"]), torch.from_numpy(pil).permute(2, 0, 1), atol=1e-6)
    assert not torch.allclose(T.denormalize(bilinear["image"]), torch.from_numpy(pil).permute(2, 0, 1), atol=1e-2)
    assert torch.equal(bicubic["semantic"], torch.from_numpy(nearest.astype(np.int64)))   # 16 classes, 255
    assert torch.equal(bicubic["semantic"], bilinear["semantic"])
    with pytest.raises(DataError, match="image_resample must be bilinear or bicubic"):
        build_dataset("cityscapes", "val", (20, 40), str(tmp_path), image_resample="lanczos", **common)
    args = train_dada.get_args_parser().parse_args(TINY + [
        "--data-root", str(tmp_path), "--classes", "16", "--image-resample", "bicubic", "--tgt-resize", "20", "40"])
    assert train_dada.val_loader("cityscapes", "tgt", args).dataset.image_resample == "bicubic"
    record = args.scoring[-1]
    assert record["image_resample"] == "bicubic" and record["resize"] == [20, 40]
    again = evaluate.get_args_parser().parse_args(["--checkpoint", "unused.pth", "--dataset", "cityscapes",
                                                   "--data-root", str(tmp_path), "--split", "val"])
    evaluate.inherit_run_settings(again, {"scoring": [record]}, "cityscapes")
    assert evaluate.build_split("cityscapes", ["semantic"], again.size, again).image_resample == "bicubic"


def test_dada_sh_has_the_oracle_and_negative_transfer_commands():
    """Table 2's target-only oracle (--src = --tgt, source-only) and Sec. 4.2's rates."""
    import os
    import subprocess
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    names = [line.split(":")[0] for line in subprocess.run(
        ["bash", "experiments/dada.sh", "list"], cwd=root, capture_output=True, text=True, check=True).stdout.splitlines()]
    assert {"oracle", "negtransfer"} <= set(names)
    text = open(os.path.join(root, "experiments", "dada.sh")).read()
    assert "--src cityscapes --tgt cityscapes --classes 7 --setup s1" in text
    assert "--src mapillary --tgt mapillary --classes 7 --setup s1" in text
    assert text.count("--reference") == 1 and "ntr t2_mapillary_dada_320 t2_mapillary_s1_320 cityscapes" in text


def test_domain_labels_and_the_texts_that_describe_them(tmp_path, monkeypatch):
    """Source 0, target 1 as the official train_UDA.py (the paper writes 1 / 0); and the
    corrected texts: bce_adv's labels, the discriminator's section, the 7-class table as ours,
    the depth block's channels (text and official code differ)."""
    import os
    import re
    from lib.models.discriminators import OutputDiscriminator
    seen = []
    real = losses.bce_adv
    monkeypatch.setattr(train_dada.losses, "bce_adv", lambda out, label: (seen.append(label), real(out, label))[1])
    args, model, net, discs, optims, src, tgt = _setup_step(tmp_path, "s7")
    train_dada.train_step(model, discs, src, tgt, optims, engine.Amp("off", args.device), args, 0)
    assert seen == [0.0, 0.0, 1.0]                  # fooling: target as source; D: source 0, target 1
    flat = " ".join(real.__doc__.split())
    assert "1.0 = source" not in flat and "labels source 0 and target 1" in flat
    assert "Sec. 3.3" not in OutputDiscriminator.__doc__ and "Sec. 3.2" in OutputDiscriminator.__doc__
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    text = {f: " ".join(open(os.path.join(root, f)).read().split())
            for f in ("lib/data/labels.py", "README.md", "docs/reference.md")}
    assert all("DADA's vehicle is labelIds" not in t for t in text.values())
    assert all(re.search(r"7-class (map|table)? ?is ours|table is ours", t) for t in text.values())
    assert "2048 -> 512 -> 128 -> 32" in text["docs/reference.md"] and "2048 -> 512 -> 512 -> 128" in text["docs/reference.md"]


def test_diagnostics_show_z_fit_and_each_discriminator_against_chance(tmp_path):
    """metrics.json "diagnostics": Z's fit on source val (as tools/dada_depth_fit.py measures
    it, on the same 4 images) and each discriminator's patch accuracy and BCE per domain.
    discriminator_counts by hand: logits (-1, 2, 0, 3) against target (1): 2 of 4 on the right
    side of 0, BCE sum = sum log(1 + e^-x)."""
    right, n, bce = train_dada.discriminator_counts(torch.tensor([-1.0, 2.0, 0.0, 3.0]), 1)
    assert (right, n) == (2.0, 4) and bce == pytest.approx(sum(math.log1p(math.exp(-x)) for x in (-1, 2, 0, 3)))
    assert train_dada.discriminator_counts(torch.tensor([-1.0, 2.0, 0.0, 3.0]), 0)[0] == 2.0   # 0 counts as source
    metrics = run(tmp_path / "s7", "--setup", "s7", iters=1)
    diag = metrics["diagnostics"]
    assert set(diag) == {"depth_source", "d_fused"}
    d = diag["d_fused"]
    assert 0 <= d["src"]["acc"] <= 100 and d["acc"] == pytest.approx((d["src"]["acc"] + d["tgt"]["acc"]) / 2)
    assert d["chance_acc"] == 50.0 and d["src"]["bce"] > 0
    import os
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
    import dada_depth_fit
    from lib.data import build_dataset
    net, saved = dada_depth_fit.load(str(tmp_path / "s7" / "model.pth"))
    data = build_dataset("proc-a", "val", saved["size"], None, length=8, labels=["semantic", "depth"])
    # the diagnostic scores with running statistics (eval mode); the tool defaults to train mode
    got = dada_depth_fit.fit(net.eval(), torch.utils.data.Subset(data, range(4)), 1, True, saved["depth_target_scale"])
    assert diag["depth_source"]["target_mean"] == pytest.approx(got["z_target_mean"], rel=1e-5)
    assert diag["depth_source"]["abs_rel"] == pytest.approx(got["z_abs_rel"], rel=1e-4)
    assert 0.5 < got["z_target_mean"] < 2     # the cpu preset's --depth-target-scale 1/64: mean ~1, not ~64
    assert run(tmp_path / "s1", "--setup", "s1", iters=1)["diagnostics"] == {}     # no Z, no D
