"""train_semimtl.py on tiny procedural data: L_inter's target class and sign in every mode
(eq. 3-6, on hand-made discriminator outputs), the domain-aware discriminator (spectral norm
on the first four convs, K + 1 classes), Algorithm 1's update order, no supervised loss for an
unlabelled (dataset, task) pair, the STL BatchNorm control, delta-M, presets, every method
end to end."""
import json
import math

import pytest
import torch
from torch.nn.utils import parametrize

import train_semimtl as sm
from lib import engine
from lib.args import apply_preset
from lib.models.semimtl import CITYSCAPES_BASELINE_FOCAL, DomainDiscriminator, PSPHead, SemiMtlNet, depth_target

TINY = ["--size", "32", "64", "--batch-size", "2", "--proc-length", "8", "--workers", "0",
        "--eval-batches", "1", "--log-every", "1", "--device", "cpu", "--backbone", "resnet-tiny",
        "--decoder-width", "32", "--d-width", "8"]


def parse(*flags):
    return sm.get_args_parser().parse_args(list(flags))


def run(out_dir, *extra, iters=1):
    return sm.main(parse(*TINY, "--iters", str(iters), "--output-dir", str(out_dir), *extra))


# ----------------------------------------------------------------------------- L_inter, eq. 3-6
P = (0.5, 0.3, 0.2)   # D's softmax at every pixel: ground truth, a prediction of A (k=1), of B (k=2)


def hand_logits():
    return torch.log(torch.tensor(P)).view(1, 3, 1, 1).expand(2, 3, 4, 5).clone().requires_grad_(True)


@pytest.mark.parametrize("method,mode,task,k,classes,value,weight", [
    # semantics labelled on A (k=1) only: B's prediction (k=2) is the unlabelled one
    ("semimtl", "m1", "semantic", 2, [1], -math.log(0.3), 1e-4),           # eq. 4: to A's predictions
    ("semimtl", "m2", "semantic", 2, [0], -math.log(0.5), 1e-4),           # eq. 5: to the ground truth
    ("semimtl", "m3", "semantic", 2, [0, 1], -math.log(1 - 0.2), 1e-4),    # eq. 6: away from class 2
    ("semimtl", "m2", "semantic", 1, [0], -math.log(0.5), 1e-3),           # eq. 3: L_intra
    # depth labelled on B (k=2) only: A's prediction (k=1) is the unlabelled one
    ("semimtl", "m1", "depth", 1, [2], -math.log(0.2), 1e-4),
    ("semimtl", "m3", "depth", 1, [0, 2], -math.log(1 - 0.3), 1e-4),
    ("semisd", "m1", "semantic", 2, [0], -math.log(0.5), 1e-4),            # 2-way: always to GT
])
def test_fooling_loss_target_class_value_and_sign(method, mode, task, k, classes, value, weight):
    # the paper's weights (Sec. 4.1) given explicitly: the parser's defaults are the cpu preset's
    args = parse("--method", method, "--mode", mode, "--lambda-intra", "1e-3", "--lambda-inter", "1e-4")
    plan = sm.dataset_plan(args)
    got, w = sm.fool_classes(args, plan, task, k)
    assert got == classes and w == weight
    logits = hand_logits()
    loss = sm.adv_loss(logits, got)
    assert loss.item() == pytest.approx(value, rel=1e-6) and loss.item() > 0
    loss.backward()
    g = logits.grad[0, :, 0, 0]
    # Descending the loss raises the target classes' logits and lowers the others':
    # d/dz_c of -log sum_S p = p_c - p_c [c in S] / sum_S p.
    mass = sum(P[c] for c in classes)
    for c in range(3):
        expected = (P[c] - (P[c] / mass if c in classes else 0.0)) / (2 * 4 * 5)
        assert g[c].item() == pytest.approx(expected, rel=1e-5)
        assert (g[c] < 0) == (c in classes)


def test_discriminator_classes_per_method():
    """Eq. 2: 0 = ground truth, k = a prediction of dataset k (SemiMTL); SemiSD 1; Tsai's DA
    0 / 1 for the labelled / unlabelled dataset's prediction, and no fooling term on the first."""
    for method, expect in (("semimtl", (1, 2)), ("semisd", (1, 1)), ("da-seg", (0, 1))):
        args = parse("--method", method)
        plan = sm.dataset_plan(args)
        assert tuple(sm.pred_class(args, plan, "semantic", k) for k in (1, 2)) == expect
    args = parse("--method", "da-seg", "--lambda-intra", "1e-3", "--lambda-inter", "1e-4")
    assert sm.fool_classes(args, sm.dataset_plan(args), "semantic", 1) is None
    assert sm.fool_classes(args, sm.dataset_plan(args), "semantic", 2) == ([0], 1e-4)   # lambda_inter


# ----------------------------------------------------------------------------- architecture
def test_discriminator_spectral_norm_on_the_first_four_convs_and_k_plus_one_outputs():
    torch.manual_seed(0)
    d = DomainDiscriminator(5, num_classes=4, width=8)
    convs = [m for m in d.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [parametrize.is_parametrized(c, "weight") for c in convs] == [True] * 4 + [False]
    assert [c.out_channels for c in convs] == [8, 16, 32, 64, 4]
    assert all(c.kernel_size == (4, 4) and c.stride == (2, 2) for c in convs)
    slopes = [m.negative_slope for m in d.modules() if isinstance(m, torch.nn.LeakyReLU)]
    assert slopes == [0.2] * 4
    assert d(torch.randn(2, 5, 64, 64)).shape == (2, 4, 64, 64)   # upsampled to the input size
    for c in convs[:4]:
        for _ in range(300):   # each read in train mode is one power iteration
            w = c.weight.detach().reshape(c.out_channels, -1)
        assert torch.linalg.matrix_norm(w, ord=2).item() == pytest.approx(1.0, abs=1e-2)


@pytest.mark.parametrize("flags,classes", [((), 3), (("--datasets", "proc-a:semantic", "proc-b:depth",
                                                     "proc-a:none"), 4), (("--method", "semisd"), 2)])
def test_discriminators_see_k_plus_one_classes(flags, classes):
    args = parse("--backbone", "resnet18", "--decoder-width", "32", "--d-width", "8", *flags)
    plan = sm.dataset_plan(args)
    _, _, discs, optims = sm.build(args, plan, sm.model_tasks(args, plan), 11)
    assert set(discs) == {"semantic", "depth"} and set(optims) == {"model", "d_semantic", "d_depth"}
    assert all(d.num_classes == classes for d in discs.values())
    assert optims["d_depth"].defaults["betas"] == (0.9, 0.99) and optims["d_depth"].defaults["lr"] == 1e-4
    assert optims["model"].defaults["momentum"] == 0.9 and optims["model"].defaults["weight_decay"] == 1e-4


def test_psp_pools_1_2_3_6_and_outputs_come_at_input_size():
    head = PSPHead(64, 7, width=16)
    assert [s[0].output_size for s in head.stages] == [1, 2, 3, 6]
    net = SemiMtlNet("resnet18", 7, output_stride=16, decoder_width=32).eval()
    out = net.forward_raw(torch.randn(2, 3, 40, 72))
    assert out["semantic"].shape == (2, 7, 40, 72) and out["depth"].shape == (2, 40, 72)
    assert set(net.encoders) == {"shared"}
    stl = SemiMtlNet("resnet18", 7, output_stride=16, decoder_width=32, shared_encoder=False)
    assert set(stl.encoders) == {"semantic", "depth"}
    assert set(stl.forward_raw(torch.randn(2, 3, 32, 64), ["depth"])) == {"depth"}


def test_depth_target_is_inverse_depth_with_the_sky_at_zero():
    depth = torch.tensor([0.0, 2.0, 50.0])
    inv, mask = depth_target(depth, "inverse")
    assert mask is None   # the sky (0) is a valid target of 0
    assert inv.tolist() == pytest.approx([0.0, CITYSCAPES_BASELINE_FOCAL / 2, CITYSCAPES_BASELINE_FOCAL / 50])
    net = SemiMtlNet("resnet18", 3, output_stride=16, decoder_width=32)
    assert net.to_depth(inv[1:]).tolist() == pytest.approx([2.0, 50.0])
    h, hmask = depth_target(torch.tensor([0.0, 0.25]), "height")
    assert h.tolist() == [0.0, 0.25] and hmask.tolist() == [False, True]


# ----------------------------------------------------------------------------- Algorithm 1
def _setup(tmp_path, *flags):
    """Network, discriminators and one batch per dataset, as main() builds them."""
    args = parse(*TINY, "--iters", "2", "--output-dir", str(tmp_path), *flags)
    apply_preset(args, sm.PRESETS, sm.dataset_names(args), log=None)
    plan = sm.dataset_plan(args)
    tasks = sm.model_tasks(args, plan)
    args.g_update = args.g_update or ("per-iteration" if args.method in ("stl", "jtl") else "per-dataset")
    engine.init_distributed(args)
    data = sm.train_datasets(args, plan)
    _, net, discs, optims = sm.build(args, plan, tasks, 11)
    batches = [next(engine.InfiniteLoader(d, 2, args, domain=k)) for k, d in enumerate(data)]
    return args, plan, tasks, sm.RawOutputs(net).train(), net, discs, optims, batches


def _params(module):
    return [p.detach().clone() for p in module.parameters()]


def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("method,expected", [
    ("semimtl", ["model", "model", "d_semantic", "d_depth"]),   # G per dataset, D per iteration
    ("jtl", ["model"]),                                          # synchronous: one step
])
def test_update_order_of_algorithm_1(tmp_path, method, expected):
    args, plan, tasks, model, net, discs, optims, batches = _setup(tmp_path, "--method", method)
    order, d_before = [], {t: _params(d) for t, d in discs.items()}
    for name, opt in optims.items():
        def spy(*a, _name=name, _step=opt.step, **k):
            # Every network step happens while each discriminator still has its weights
            # from the start of the iteration: D steps once, after all K datasets.
            if _name == "model":
                assert all(_same(_params(d), d_before[t]) for t, d in discs.items())
            order.append(_name)
            return _step(*a, **k)
        opt.step = spy
    g_before = _params(net)
    sm.train_step(model, discs, batches, optims, engine.Amp("off", args.device), args, plan, tasks, 11, 0)
    assert order == expected
    assert not _same(_params(net), g_before)
    assert all(not _same(_params(d), d_before[t]) for t, d in discs.items())


def test_generator_losses_leave_d_alone_and_d_losses_leave_the_network_alone(tmp_path):
    args, plan, tasks, model, net, discs, optims, batches = _setup(tmp_path)
    amp = engine.Amp("off", args.device)
    buffers = {t: [b.clone() for b in d.buffers()] for t, d in discs.items()}   # spectral-norm u, v
    terms, maps = sm.generator_step(model, discs, batches[1], 2, plan, tasks, 11, amp, args)
    amp.backward(sum(terms.values()))
    assert {"dep_2", "intra_dep_2", "inter_sem_2"} == set(terms)
    assert all(p.grad is None for d in discs.values() for p in d.parameters())
    assert all(_same(list(d.buffers()), buffers[t]) for t, d in discs.items())   # no power step
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    assert all(d.training and all(p.requires_grad for p in d.parameters()) for d in discs.values())
    # D's inputs: B's depth ground truth (class 0), B's predictions of both tasks (class 2)
    assert sorted((t, c) for t, _, c in maps) == [("depth", 0), ("depth", 2), ("semantic", 2)]
    for p in net.parameters():
        p.grad = None
    sm.discriminator_step(discs, maps, amp)
    assert all(p.grad is None for p in net.parameters())
    assert all(p.grad is not None for d in discs.values() for p in d.parameters())


class Recording(dict):
    """A batch that records which keys are read."""

    def __init__(self, *a):
        super().__init__(*a)
        self.read = set()

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)


@pytest.mark.parametrize("method", ["semimtl", "jtl", "da-depth"])
def test_no_supervised_loss_for_an_unlabelled_dataset_task_pair(tmp_path, monkeypatch, method):
    """Training batches carry only their dataset's labels; and even handed every label (as the
    files of proc-a / proc-b, or Cityscapes, have), the step never reads an unlabelled one."""
    args, plan, tasks, model, net, discs, optims, batches = _setup(tmp_path, "--method", method)
    assert [sorted(set(b) & {"semantic", "depth"}) for b in batches] == [["semantic"], ["depth"]]
    full = sm.train_datasets(parse(*TINY, "--tasks-a", "semantic", "depth", "--tasks-b", "semantic", "depth"),
                             [sm.Source("proc-a", "train", ("semantic", "depth")),
                              sm.Source("proc-b", "train", ("semantic", "depth"))])
    batches = [Recording(next(engine.InfiniteLoader(d, 2, args, domain=k))) for k, d in enumerate(full)]
    batches[0]["depth"] = torch.full_like(batches[0]["depth"], float("nan"))        # would poison a loss
    batches[1]["semantic"] = torch.full_like(batches[1]["semantic"], 3)
    for b in batches:
        b.read.clear()
    seen = []
    real = sm.supervised
    monkeypatch.setattr(sm, "supervised", lambda t, raw, b, a: (seen.append((t, b["domain"][0].item())),
                                                                 real(t, raw, b, a))[1])
    sm.train_step(model, discs, batches, optims, engine.Amp("off", args.device), args, plan, tasks, 11, 0)
    assert "depth" not in batches[0].read and "semantic" not in batches[1].read
    assert sorted(seen) == ([("depth", 1)] if method == "da-depth" else [("depth", 1), ("semantic", 0)])


def test_stl_control_moves_only_batchnorm_statistics_and_delta_m_reads_the_stl_run(tmp_path):
    """STL with both datasets through BN: the other dataset's images reach each single-task
    network in train mode with no loss, so only running statistics differ. Delta-M (eq. 10)
    over mIoU and RMSE, per dataset, from the STL run's metrics.json (--stl-run)."""
    stl = run(tmp_path / "plain", "--method", "stl", "--seed", "3")
    run(tmp_path / "bn", "--method", "stl", "--all-through-bn", "--seed", "3")
    wa = torch.load(tmp_path / "plain" / "checkpoint.pth", weights_only=True)["models"]["model"]
    wb = torch.load(tmp_path / "bn" / "checkpoint.pth", weights_only=True)["models"]["model"]
    stats = [k for k in wa if k.endswith("running_mean")]
    assert {k.split(".")[1] for k in stats if not torch.equal(wa[k], wb[k])} == {"semantic", "depth"}
    weights = [k for k in wa if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert all(torch.equal(wa[k], wb[k]) for k in weights)
    m = run(tmp_path / "mtl", "--stl-run", str(tmp_path / "plain"))
    for name in ("proc-a", "proc-b"):
        a, b = m["scores"][name], stl["scores"][name]
        expected = ((a["mIoU"] - b["mIoU"]) / b["mIoU"] - (a["rmse"] - b["rmse"]) / b["rmse"]) / 2 * 100
        assert m["delta_m"][name] == pytest.approx(expected)
    with pytest.raises(engine.UserError, match="not stl"):
        run(tmp_path / "bad", "--stl-run", str(tmp_path / "mtl"))


def test_delta_m_by_hand():
    assert sm.stl_delta_m({"x": {"mIoU": 55.0, "rmse": 9.0}}, {"x": {"mIoU": 50.0, "rmse": 10.0}}) == \
        {"x": pytest.approx(10.0)}
    assert sm.stl_delta_m({"x": {"mIoU": 55.0}}, {"x": {"mIoU": 50.0, "rmse": 10.0}}) == {"x": None}


# ----------------------------------------------------------------------------- end to end
@pytest.mark.parametrize("flags", [("--method", "semimtl", "--mode", "m1"), ("--method", "semimtl", "--mode", "m3"),
                                   ("--method", "semisd"), ("--method", "jtl"), ("--method", "da-seg"),
                                   ("--method", "da-depth")])
def test_every_method_runs_end_to_end(tmp_path, flags):
    metrics = run(tmp_path, *flags)
    assert metrics["method"] == flags[1] and metrics["selection"] == "last"
    scored = {"da-seg": {"mIoU"}, "da-depth": {"rmse"}}.get(flags[1], {"mIoU", "rmse"})
    for name in ("proc-a", "proc-b"):
        assert scored <= set(metrics["scores"][name])
        assert not ({"mIoU", "rmse"} - scored) & set(metrics["scores"][name])
    saved = json.load(open(tmp_path / "metrics.json"))
    assert saved["datasets"] == [{"name": "proc-a", "split": "train", "tasks": ["semantic"]},
                                 {"name": "proc-b", "split": "train", "tasks": ["depth"]}]
    ckpt = torch.load(tmp_path / "checkpoint.pth", weights_only=True)
    assert {k for k in ckpt["models"] if k.startswith("d_")} == \
        {"jtl": set(), "da-seg": {"d_semantic"}, "da-depth": {"d_depth"}}.get(flags[1], {"d_semantic", "d_depth"})


# ----------------------------------------------------------------------------- presets, errors
@pytest.mark.parametrize("flags,expected", [
    (("--src", "cityscapes", "--tgt", "cityscapes", "--tgt-split", "train_extra"),
     dict(backbone="resnet101", pretrained="imagenet", size=[256, 256], resize=[512, 1024], classes=19,
          depth_target="inverse", lr=0.01, output_stride=8, d_width=64, flip=True, w_depth=0.01,
          eval_batches=None)),
    (("--src", "isprs_potsdam", "--tgt", "isprs_vaihingen"),
     dict(size=[384, 384], resize=None, classes=6, depth_target="height")),
    (("--datasets", "cityscapes:semantic", "synscapes:depth"), dict(size=[256, 256], resize=[512, 1024])),
    ((), dict(backbone="resnet18", pretrained="none", size=[64, 128], iters=150, d_width=32, flip=False,
              w_depth=0.1, eval_batches=50, lambda_intra=1e-2, lambda_inter=1e-3)),
    (("--src", "cityscapes", "--size", "128", "128"), dict(size=[128, 128], backbone="resnet101")),
])
def test_presets(flags, expected):
    args = apply_preset(parse(*flags), sm.PRESETS, sm.dataset_names(parse(*flags)), log=None)
    assert {k: getattr(args, k) for k in expected} == expected
    assert args.w_seg == 1.0
    if flags:   # real data: the paper's weights (Sec. 4.1); the cpu preset's are in its row
        assert (args.lambda_intra, args.lambda_inter) == (1e-3, 1e-4)


@pytest.mark.parametrize("flags,message", [
    (("--method", "da-seg", "--tasks-b", "semantic", "depth"), "label it on some datasets only"),
    (("--method", "jtl", "--all-through-bn"), "BatchNorm control of --method stl"),
    (("--method", "da-seg", "--all-through-bn"), "BatchNorm control of --method stl"),
    (("--batch-size", "1"), "at least 2"),
    (("--datasets", "proc-a"), "expected NAME\\[@SPLIT\\]:TASKS"),
    (("--datasets", "proc-a:normals"), "tasks are semantic, depth"),
    (("--tasks-a", "none", "--tasks-b", "none"), "no dataset is labelled"),
])
def test_bad_input_is_one_line_before_training(tmp_path, flags, message):
    with pytest.raises(engine.UserError, match=message):
        run(tmp_path, *flags)
    assert not (tmp_path / "args.json").exists()


def test_resume_continues_exactly(tmp_path):
    """A run stopped after one iteration and resumed ends with the uninterrupted run's network,
    discriminators and spectral-norm vectors."""
    run(tmp_path / "full", iters=2)
    run(tmp_path / "part", "--stop-at", "1", iters=2)
    run(tmp_path / "part", "--resume", "auto", iters=2)
    a = torch.load(tmp_path / "full" / "checkpoint.pth", weights_only=True)["models"]
    b = torch.load(tmp_path / "part" / "checkpoint.pth", weights_only=True)["models"]
    assert set(a) == {"model", "d_semantic", "d_depth"}
    assert all(torch.equal(a[m][k], b[m][k]) for m in a for k in a[m])


def test_bench_times_the_semimtl_step():
    """tools/bench.py --only semimtl runs train_semimtl.train_step (two datasets, D step)."""
    import os
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
    import bench
    res = bench.main(bench.get_args_parser().parse_args(
        ["--only", "semimtl", "--size", "32", "64", "--batch-size", "2", "--workers", "0", "--steps", "1",
         "--warmup", "0", "--device", "cpu", "--backbone", "resnet18", "--decoder-width", "32"]))
    d = res["semimtl"]
    assert d["step_ms"] == pytest.approx(d["forward_ms"] + d["backward_ms"] + d["optimizer_ms"])
    assert d["images_per_s"] == pytest.approx(2 / (d["step_ms"] / 1000))


def test_bench_times_the_encnet_augmentation():
    """tools/bench.py --only augment times ScaleAugmented (scale, rotate, crop, flip) against the
    crop and flip alone, on one sample (docs/semimtl.md quotes its figures; no time asserted)."""
    import os
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
    import bench
    res = bench.main(bench.get_args_parser().parse_args(
        ["--only", "augment", "--size", "32", "64", "--crop", "16", "16", "--samples", "2", "--device", "cpu"]))
    d = res["augment"]
    assert set(d) == {"augment_ms", "crop_flip_ms", "extra_ms"} and d["augment_ms"] > 0
    assert d["extra_ms"] == pytest.approx(d["augment_ms"] - d["crop_flip_ms"])


# ----------------------------------------------------------------------------- issue 21, items 6-8
def test_encnet_scaling_resizes_before_the_crop_and_divides_depth():
    """EncNet's augmentation (Sec. 4.1 "following [65]"): scale the whole image, then crop. At a
    scale of 2, nearest labels are the originals, depth is halved for the inverse-depth target
    (the scene looks twice as close) and kept as it is for heights."""
    from lib.data import transforms as T
    from lib.data.procedural import ProceduralScenes
    raw = ProceduralScenes("b", "train", (32, 64), labels=("semantic", "depth"))
    for divide in (True, False):
        data = sm.ScaleAugmented(raw, (32, 64), (2.0, 2.0), 0.0, False, False, divide_depth=divide)
        with engine.isolated_rng(0):
            out = data[0]
        assert out["image"].shape == (3, 32, 64) and out["depth"].shape == (32, 64)
        depths = set(raw[0]["depth"].unique().tolist())
        got = out["depth"].unique()
        assert set((got * 2 if divide else got).tolist()) <= {float(torch.tensor(d).float()) for d in depths}
        assert set(out["semantic"].unique().tolist()) <= set(raw[0]["semantic"].unique().tolist())
    small = T.scale_sample({"image": torch.rand(3, 8, 8), "depth": torch.full((8, 8), 4.0)}, 0.5, True)
    assert small["image"].shape == (3, 4, 4) and small["depth"].unique().tolist() == [8.0]
    padded = T.paired_transform(small, (8, 8), train=True)    # EncNet pads what got smaller
    assert (padded["depth"] == 0).sum() == 64 - 16


def test_rotation_turns_the_content_on_the_pixel_grid_and_pads_with_invalid():
    from lib.data import transforms as T
    image = torch.zeros(3, 5, 5)
    image[:, 0, 2] = 1.0                                    # a mark at the top centre
    sem = torch.zeros(5, 5, dtype=torch.long)
    sem[0, 2] = 3
    out = T.rotate_sample({"image": image, "semantic": sem, "depth": torch.ones(5, 5), "name": "x"}, 90)
    assert out["image"][0, 2, 0] == 1 and out["semantic"][2, 0] == 3   # counter-clockwise: to the left
    wide = T.rotate_sample({"image": torch.rand(3, 8, 16), "semantic": torch.zeros(8, 16, dtype=torch.long),
                            "depth": torch.ones(8, 16)}, 10)
    assert wide["semantic"][0, 0] == 255 and wide["depth"][0, 0] == 0 and wide["depth"][4, 8] == 1
    with pytest.raises(ValueError, match="normal"):
        T.rotate_sample({"image": image, "normals": torch.zeros(3, 5, 5)}, 5)


def test_scaling_and_rotation_reach_the_training_batches(tmp_path):
    """--scale-range / --rotate wrap every training set (the paper preset's EncNet pipeline);
    a run with them trains end to end."""
    args = parse(*TINY, "--scale-range", "0.5", "2", "--rotate", "10")
    data = sm.train_datasets(args, sm.dataset_plan(args))
    assert all(isinstance(d, sm.ScaleAugmented) and d.scale_range == (0.5, 2.0) and d.rotate == 10 for d in data)
    assert [d.divide_depth for d in data] == [True, True]
    assert not any(isinstance(d, sm.ScaleAugmented) for d in sm.train_datasets(parse(*TINY), sm.dataset_plan(args)))
    m = run(tmp_path, "--scale-range", "0.5", "2", "--rotate", "10")
    assert set(m["scores"]) == {"proc-a", "proc-b"}
    with pytest.raises(engine.UserError, match="scale-range"):
        run(tmp_path / "bad", "--scale-range", "2", "1")


def test_ground_counts_in_rmse_of_heights():
    """Issue 21's example: ISPRS ground is stored as 1/65535, under the ratio metrics' floor.
    Ground truth [1/65535, 0.5] against a prediction [0.3, 0.5] must not score RMSE 0: RMSE
    counts every labelled pixel, the ratio metrics (undefined at height 0) the 0.5 one."""
    from lib import metrics
    gt, pred = torch.tensor([[1 / 65535, 0.5]]), torch.tensor([[0.3, 0.5]])
    assert metrics.depth_errors(pred, gt)["rmse"] == 0.0                 # the old protocol
    e = metrics.depth_errors(pred, gt, absolute_min_depth=0.0)
    assert e["rmse"] == pytest.approx(math.sqrt((0.3 - 1 / 65535) ** 2 / 2))
    assert e["abs_rel"] == 0.0 and e["a1"] == 100.0
    # An all-ground patch counts in RMSE alone; the meter's default is unchanged.
    meter = metrics.DepthMeter(1e-3, 80.0, absolute_min_depth=0.0)
    meter.update(torch.stack([pred, torch.full((1, 2), 0.2)]), torch.stack([gt, torch.full((1, 2), 1 / 65535)]))
    out = meter.compute()
    assert meter.count == 1 and out["abs_rel"] == 0.0
    assert out["rmse"] == pytest.approx((e["rmse"] + (0.2 - 1 / 65535)) / 2)
    plain = metrics.DepthMeter(1e-3, 80.0).update(pred.view(1, 1, 2), gt.view(1, 1, 2)).compute()
    assert plain["rmse"] == 0.0


def test_train_semimtl_scores_isprs_heights_with_the_ground():
    """train_semimtl.score on a height target: the example through the run's own scorer."""
    class Heights(torch.nn.Module):
        def forward(self, x):
            return {"depth": torch.tensor([[[0.3, 0.5]]]).expand(x.shape[0], 1, 2)}
    batch = {"image": torch.zeros(1, 3, 1, 2), "depth": torch.tensor([[[1 / 65535, 0.5]]])}
    args = parse("--depth-target", "height")
    args.device = "cpu"
    out = sm.score(Heights(), [batch], ["depth"], None, args, None)
    assert out["rmse"] == pytest.approx(math.sqrt((0.3 - 1 / 65535) ** 2 / 2)) and out["abs_rel"] == 0.0
    args.depth_target = "inverse"           # metres: the usual floor for every metric
    assert sm.score(Heights(), [batch], ["depth"], None, args, None)["rmse"] == 0.0
    assert sm.depth_scoring(parse("--depth-target", "height"))["rmse"].startswith("every labelled pixel")


def test_depth_holes_can_be_masked_out_of_berhu():
    """--depth-holes mask: depth 0 (Cityscapes' disparity holes, and its sky) leaves berHu;
    zero (the default, Sec. 4.1's sky at 0) trains it as inverse depth 0."""
    depth = torch.tensor([[0.0, 2.0, 50.0, 0.0]])
    inv, mask = depth_target(depth, "inverse", holes="mask")
    assert mask.tolist() == [[False, True, True, False]] and inv[0, 0] == 0
    raw = torch.tensor([[5.0, 100.0, 9.0, 7.0]])
    batch = {"depth": depth}
    masked = sm.supervised("depth", raw, batch, parse("--depth-holes", "mask", "--w-depth", "1"))
    zero = sm.supervised("depth", raw, batch, parse("--w-depth", "1"))
    assert masked.item() == pytest.approx(losses_berhu(raw[:, 1:3], inv[:, 1:3]))
    assert zero.item() == pytest.approx(losses_berhu(raw, inv))


def losses_berhu(pred, target):
    from lib import losses
    return losses.berhu(pred, target).item()


@pytest.mark.parametrize("flags,expected", [
    (("--src", "cityscapes", "--tgt", "cityscapes", "--tgt-split", "train_extra"),
     dict(scale_range=[0.5, 2.0], rotate=10.0, flip=True, max_depth=80.0)),
    (("--src", "isprs_potsdam", "--tgt", "isprs_vaihingen"), dict(scale_range=[0.5, 2.0], rotate=10.0)),
    ((), dict(scale_range=None, rotate=0.0, flip=False)),
])
def test_presets_augment_as_encnet_on_real_data_only(flags, expected):
    args = apply_preset(parse(*flags), sm.PRESETS, sm.dataset_names(parse(*flags)), log=None)
    assert {k: getattr(args, k) for k in expected} == expected
    sources = {k: v[1] for k, v in sm.PRESETS.items()}
    assert "[65]" in sources["scale_range"] and "cpu: off" in sources["scale_range"]
    for key in ("classes", "resize", "depth_target", "max_depth"):   # the paper's silences, as ours
        assert "ours" in sources[key], key


def test_rotation_of_a_non_square_image_is_not_sheared():
    """90 degrees counter-clockwise on the pixel grid: a mark 1.5 px right of and 0.5 px above the
    centre of an 8x16 map lands 0.5 px left of and 1.5 px above it (a rotation in the normalised
    grid would shear it to (2.75, 6.5))."""
    from lib.data import transforms as T
    sem = torch.zeros(8, 16, dtype=torch.int64)
    sem[3, 9] = 1
    out = T.rotate_sample({"image": torch.zeros(3, 8, 16), "semantic": sem}, 90)["semantic"]
    assert (out == 1).nonzero().tolist() == [[2, 7]]


def test_augmentation_padding_is_no_depth_target():
    """Corners a rotation makes up are no label (PAD_DEPTH), not sky: the berHu mask leaves them
    out while the real depth 0 (sky) stays a target, under the default --depth-holes zero."""
    import random
    from lib.data import transforms as T

    class One(torch.utils.data.Dataset):
        def __len__(self):
            return 1

        def __getitem__(self, i):
            depth = torch.full((32, 32), 10.0)
            depth[:, 15:17] = 0.0                       # a strip of sky through the centre
            return {"image": T.normalize(torch.rand(3, 32, 32)), "depth": depth}
    random.seed(0)
    sample = sm.ScaleAugmented(One(), (32, 32), (1.0, 1.0), 30, False, False, True)[0]
    inv, mask = depth_target(sample["depth"], "inverse")
    corners = sample["depth"] < 0
    assert corners[0, 0] and corners[-1, -1] and not corners[16, 16] and "valid" not in sample
    assert mask is not None and torch.equal(mask, ~corners)
    assert ((sample["depth"] == 0) & mask).any()       # sky is still a target


def test_diagnostics_name_each_discriminators_accuracy_and_the_gradient_share(tmp_path):
    """metrics.json "diagnostics" (SemiMTL, A labelled for semantics, B for depth): each
    discriminator's accuracy on ground truth and predictions of labelled and unlabelled
    datasets, in [0, 100]; the adversarial and supervised gradient norms with their ratio. With
    lambda_intra = lambda_inter = 0 there is no adversarial gradient: norm 0, ratio 0."""
    diag = run(tmp_path / "m2", "--method", "semimtl", "--mode", "m2")["diagnostics"]
    acc = diag["d_accuracy"]
    assert set(acc) == {"d_sem/1:proc-a/labelled/gt", "d_sem/1:proc-a/labelled/pred", "d_sem/2:proc-b/unlabelled/pred",
                        "d_dep/1:proc-a/unlabelled/pred", "d_dep/2:proc-b/labelled/gt", "d_dep/2:proc-b/labelled/pred"}
    assert all(0 <= v <= 100 for v in acc.values())
    g = diag["grad_norm"]
    assert g["adv"] > 0 and g["sup"] > 0 and g["adv_over_sup"] == pytest.approx(g["adv"] / g["sup"])
    off = run(tmp_path / "off", "--method", "semimtl", "--lambda-intra", "0", "--lambda-inter", "0")["diagnostics"]
    assert off["grad_norm"]["adv"] == 0 and off["grad_norm"]["adv_over_sup"] == 0
    assert "diagnostics" not in run(tmp_path / "jtl", "--method", "jtl")          # no discriminator
