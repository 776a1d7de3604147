"""train_umadapt.py on tiny procedural data: every stage and variant end to end from one run
folder; N(->t) frozen in base training and in every adaptation but Adv; only res5 of Mt
changes; C_contour frozen after its stage; Algorithm 2's energy signs on a hand-made example;
Algorithm 1's one Adam per task; the class weights, sizes and errors worked out by hand. The
supplementary's networks layer by layer against its Tables 1-2; WGAN-GP's penalty by hand; the
pseudo-softmax and gradient mask by their statistics; UM-Adapt-S on two real-layout targets
(each labelled and unlabelled, KITTI depth and Cityscapes semantics only, Cityscapes without
disparity/ scored on semantics alone)."""
import itertools
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

import train_umadapt as um
from lib import engine, losses
from lib import umadapt as lu
from lib.models.umadapt import JointDiscriminator, TaskTransferNet, UMAdaptNet, batch_stats_res5, unpool2x

TINY = ["--size", "32", "64", "--batch-size", "2", "--proc-length", "8", "--workers", "0",
        "--eval-batches", "1", "--log-every", "1", "--device", "cpu", "--backbone", "resnet-tiny",
        "--decoder-width", "16", "--transfer-width", "8", "--d-width", "8", "--class-weight-images", "4"]


def run(out_dir, *extra, iters=2):
    args = um.get_args_parser().parse_args(TINY + ["--iters", str(iters), "--output-dir", str(out_dir), *extra])
    return um.main(args)


def models(run_dir, folder):
    return torch.load(run_dir / folder / "model.pth", weights_only=True)["models"]


@pytest.fixture(scope="module")
def run_dir(module_tmp):
    """One run folder: transfer, base, ccr, then every adaptation variant (2 iterations each)."""
    d = module_tmp("umadapt")
    run(d, "--stage", "all", "--variant", "noadv")
    for variant in ("b", "noadv1", "adv", "s", "stats"):
        run(d, "--stage", "adapt", "--variant", variant)
    run(d, "--stage", "adapt", "--variant", "b", "--content", "fcf")
    run(d, "--stage", "base", "--target-through-bn")
    return d


def test_every_stage_writes_its_folder_and_the_tables_metrics(run_dir):
    import json
    for folder in ("transfer", "base", "ccr", "adapt-noadv", "adapt-b", "adapt-noadv1", "adapt-adv",
                   "adapt-s", "adapt-b-fcf", "adapt-stats"):
        assert (run_dir / folder / "model.pth").is_file() and (run_dir / folder / "metrics.json").is_file()
    m = json.load(open(run_dir / "adapt-adv" / "metrics.json"))
    assert m["stage"] == "adapt" and m["variant"] == "adv"
    tgt = m["target"]["proc-b"]
    # Tables 1-3: rel, log10, rms, deltas; mean / median / 11.25 / 22.5 / 30; mIoU, mean acc, pixel acc.
    for key in ("abs_rel", "log10", "rmse", "a1", "a2", "a3", "sq_rel", "rmse_log", "mean", "median",
                "pct_11_25", "pct_22_5", "pct_30", "mIoU", "mean_acc", "acc"):
        assert isinstance(tgt[key], float), key
    base = json.load(open(run_dir / "base" / "metrics.json"))
    assert set(base) >= {"source", "target"} and "mIoU" in base["source"]


def test_transfer_nets_frozen_in_base_training_and_in_adaptation_but_adv(run_dir):
    trained = models(run_dir, "transfer")
    for folder in ("base", "adapt-noadv", "adapt-noadv1", "adapt-b", "adapt-stats", "adapt-s"):
        m = models(run_dir, folder if folder != "adapt-s" else "adapt-adv")
        if folder == "adapt-s":            # s starts from Adv's N and keeps it
            s = models(run_dir, "adapt-s")
            assert all(torch.equal(m[n][k], s[n][k]) for n in ("n_semantic", "n_depth") for k in m[n])
            continue
        for n in ("n_semantic", "n_depth"):
            assert all(torch.equal(trained[n][k], m[n][k]) for k in trained[n]), (folder, n)
    adv = models(run_dir, "adapt-adv")
    for n in ("n_semantic", "n_depth"):    # Algorithm 2 (Adv): both energy functions learn
        assert any(not torch.equal(trained[n][k], adv[n][k]) for k in trained[n]), n


def _changed(a, b):
    return {k for k in a if not torch.equal(a[k], b[k])}


@pytest.mark.parametrize("folder,start", [("adapt-noadv", "base"), ("adapt-noadv1", "base"),
                                          ("adapt-adv", "base"), ("adapt-b", "base"),
                                          ("adapt-b-fcf", "base"), ("adapt-s", "adapt-adv")])
def test_only_res5_of_mt_changes_in_adaptation(run_dir, folder, start):
    """Sec. 3.1.2: every parameter and statistic outside res5 (layer4) is bit-identical to the
    model the adaptation starts from, decoders included; res5's weights moved."""
    before, after = models(run_dir, start)["model"], models(run_dir, folder)["model"]
    changed = _changed(before, after)
    assert changed and all(k.startswith("encoder.layer4.") for k in changed)
    assert any(k.endswith("conv1.weight") for k in changed)


def test_stats_control_moves_only_res5_batchnorm_statistics(run_dir):
    """The adaptation's own control: no loss, so only res5's running statistics follow the target."""
    changed = _changed(models(run_dir, "base")["model"], models(run_dir, "adapt-stats")["model"])
    assert changed and all(k.startswith("encoder.layer4.") and k.endswith(
        ("running_mean", "running_var", "num_batches_tracked")) for k in changed)


def test_target_bn_stats_moves_statistics_but_no_weight_outside_res5(tmp_path, run_dir):
    import shutil
    for folder in ("transfer", "base", "ccr"):
        shutil.copytree(run_dir / folder, tmp_path / folder)
    shutil.copy(run_dir / "class_weights.json", tmp_path)
    run(tmp_path, "--stage", "adapt", "--variant", "noadv", "--target-bn-stats")
    before, after = models(tmp_path, "base")["model"], models(tmp_path, "adapt-noadv")["model"]
    outside = {k for k in _changed(before, after) if not k.startswith("encoder.layer4.")}
    assert outside and all(k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in outside)


def test_ccr_decoder_is_frozen_after_its_stage(run_dir):
    ccr = models(run_dir, "ccr")["contour"]
    for folder in ("adapt-noadv", "adapt-adv", "adapt-b", "adapt-s", "adapt-stats"):
        after = models(run_dir, folder)["contour"]
        assert all(torch.equal(ccr[k], after[k]) for k in ccr), folder
    # FCF's reconstructor, by contrast, learns during UM-Adapt-B(FCF) (AdaDepth's FCF).
    fcf_before, fcf_after = models(run_dir, "ccr")["fcf"], models(run_dir, "adapt-b-fcf")["fcf"]
    assert _changed(fcf_before, fcf_after)


def test_algorithm1_steps_one_adam_per_task_once_per_iteration(run_dir):
    ckpt = torch.load(run_dir / "base" / "checkpoint.pth", weights_only=True)
    assert set(ckpt["optimizers"]) == {"semantic", "depth", "normals"}
    for opt in ckpt["optimizers"].values():
        steps = {float(s["step"]) for s in opt["state"].values()}
        assert steps == {2.0}        # two iterations, one step of each task's Adam in each


class Scale(nn.Module):
    """A hand-made energy function N(->depth)(x) = w * x on one-pixel 'depth maps'."""
    target, inputs = "depth", ["semantic"]

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(1.0))

    def forward(self, maps):
        return self.w * maps["x"]


def test_adv_energy_update_has_algorithm2_sign():
    """L_D = E_src + max(0, m - E_tgt), m = 2 E_src: the N update lowers the source tuple's
    energy and raises the target tuple's. By hand (berHu, one pixel, c = |e| / 5, quadratic
    branch, dE/dw = e x / c): source x=2, y=1: e=1, c=0.2, E=2.6, dE/dw=10; target x=1, y=1.2:
    e=-0.2, c=0.04, E=0.52, dE/dw=-5; m = 5.2 > 0.52, so dL_D/dw = 10 - (-5) = 15."""
    n = Scale()
    nets = {"depth": n}
    src = ({"x": torch.full((1, 1, 1), 2.0)}, torch.full((1, 1, 1), 1.0))
    tgt = ({"x": torch.full((1, 1, 1), 1.0)}, torch.full((1, 1, 1), 1.2))
    e_s, e_t = lu.energy(nets, "depth", *src), lu.energy(nets, "depth", *tgt)
    assert e_s.item() == pytest.approx(2.6) and e_t.item() == pytest.approx(0.52)
    loss = lu.margin_d_loss(e_s, e_t, 2.0)
    assert loss.item() == pytest.approx(2.6 + 5.2 - 0.52)
    loss.backward()
    assert n.w.grad.item() == pytest.approx(15.0)
    with torch.no_grad():
        n.w -= 0.01 * n.w.grad
    assert lu.energy(nets, "depth", *src) < e_s and lu.energy(nets, "depth", *tgt) > e_t
    # Past the margin the target term is flat: L_D stays bounded below by E_src.
    e_s, e_t = torch.tensor(1.0, requires_grad=True), torch.tensor(3.0, requires_grad=True)
    lu.margin_d_loss(e_s, e_t, 2.0).backward()
    assert e_s.grad.item() == 1.0 and e_t.grad.item() == 0.0
    # --margin 0: L_D as printed, E_src - E_tgt, unbounded below
    e_s, e_t = torch.tensor(1.0, requires_grad=True), torch.tensor(3.0, requires_grad=True)
    loss = lu.margin_d_loss(e_s, e_t, 0.0)
    loss.backward()
    assert loss.item() == -2.0 and e_s.grad.item() == 1.0 and e_t.grad.item() == -1.0


def test_soft_semantic_energy_is_cross_entropy_of_predicted_probabilities():
    logits, target = torch.tensor([[[[0.0]], [[1.0]]]]), torch.tensor([[[[2.0]], [[0.0]]]])
    p = target.softmax(1)[0, :, 0, 0]
    logq = logits.log_softmax(1)[0, :, 0, 0]
    assert lu.task_loss("semantic", logits, target).item() == pytest.approx(-(p * logq).sum().item())


def test_median_frequency_weights_by_hand():
    """f = pixels / pixels of the images holding the class = (0.1, 0.3, -, 0.6); median 0.3."""
    w = lu.median_frequency_weights(torch.tensor([10.0, 30, 0, 60]).double(),
                                    torch.tensor([100.0, 100, 0, 100]).double())
    assert torch.allclose(w, torch.tensor([3.0, 1.0, 0.0, 0.5]))


def test_output_sizes_are_sec_4_1s():
    net = UMAdaptNet("resnet18", tasks=["depth"], decoder_width=16).eval()
    for size, out in (((228, 304), (128, 160)), ((256, 512), (128, 256))):
        assert lu.output_size(size) == out
        with torch.no_grad():
            assert net.decode(net.features(torch.zeros(1, 3, *size)))["depth"].shape[-2:] == out
    x = torch.tensor([[[[1.0, 2.0]]]])
    assert unpool2x(x).tolist() == [[[[1.0, 0.0, 2.0, 0.0], [0.0, 0.0, 0.0, 0.0]]]]


def test_bn_control_moves_only_batchnorm_statistics(run_dir):
    """base-bn (same seed and batches as base, the target through BN after each task's pass)."""
    a, b = models(run_dir, "base")["model"], models(run_dir, "base-bn")["model"]
    changed = _changed(a, b)
    assert changed and all(k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in changed)


def test_errors_before_training(tmp_path):
    with pytest.raises(engine.UserError, match="needs task-transfer networks with N"):
        run(tmp_path, "--stage", "adapt", "--variant", "noadv1", "--transfer", "depth=semantic")
    with pytest.raises(engine.UserError, match="UM-Adapt-B's ablation"):
        run(tmp_path, "--stage", "adapt", "--variant", "adv", "--content", "fcf")
    with pytest.raises(engine.UserError, match="expected T=A"):
        run(tmp_path, "--transfer", "semantic=semantic")
    with pytest.raises(engine.UserError, match="BatchNorm control of --stage base"):
        run(tmp_path, "--stage", "all", "--target-through-bn")
    with pytest.raises(engine.UserError, match="run --stage base first"):
        run(tmp_path, "--stage", "ccr")
    assert not (tmp_path / "class_weights.json").exists()     # stopped before writing anything


def test_paper_presets_pick_indoor_or_outdoor_from_the_target():
    from lib.args import apply_preset
    parse = um.get_args_parser().parse_args
    a = apply_preset(parse(["--src", "folder", "--tgt", "nyuv2"]), um.PRESETS, ["folder", "nyuv2"], log=None)
    assert (a.size, a.resize, a.classes, a.tasks, a.max_depth, a.backbone) == \
        ([228, 304], [240, 320], 40, ["semantic", "depth", "normals"], 10.0, "resnet50")
    assert a.transfer == ["semantic=depth,normals", "depth=semantic"]
    b = apply_preset(parse(["--src", "folder", "--tgt", "cityscapes,kitti_depth"]), um.PRESETS,
                     ["folder", "cityscapes", "kitti_depth"], log=None)
    assert (b.size, b.classes, b.tasks, b.transfer) == \
        ([256, 512], 19, ["semantic", "depth"], ["semantic=depth", "depth=semantic"])
    assert lu.output_size(b.size) == (128, 256) and um.check_args(b).targets == ["cityscapes", "kitti_depth"]


def test_a_task_subset_without_transfer_networks_skips_the_transfer_stage(tmp_path):
    """Any subset of tasks; no --transfer: plain multi-task base, and UM-Adapt-B still adapts."""
    m = run(tmp_path, "--tasks", "depth", "normals", "--transfer", "--variant", "b", iters=1)
    assert not (tmp_path / "transfer").exists() and (tmp_path / "ccr" / "model.pth").is_file()
    assert m["variant"] == "b" and "abs_rel" in m["target"]["proc-b"] and "mIoU" not in m["target"]["proc-b"]


# ----------------------------------------------------------------------------- the supplementary
def _first_conv(module):
    return next(m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)))


def _check_table(net, rows, inputs):
    """Each row (layer, kernel, channels, stride, output H x W, Conv* / Deconv*): the module's
    conv and BatchNorm, and its output shape from a forward on the meta device (no compute)."""
    shapes = {}
    for name, *_ in rows:
        net.get_submodule(name).register_forward_hook(
            lambda m, i, out, name=name: shapes.__setitem__(name, tuple(out.shape)))
    net(*inputs)
    for name, k, c, stride, hw, bn in rows:
        m = net.get_submodule(name)
        conv = _first_conv(m)
        assert (conv.kernel_size, conv.out_channels, conv.stride) == ((k, k), c, (stride, stride)), name
        assert shapes[name] == (1, c, *hw), name
        if bn is not None:       # Conv* / Deconv*: BatchNorm; every hidden layer: leaky ReLU
            assert any(isinstance(x, nn.BatchNorm2d) for x in m.modules()) == bn, name
            assert any(isinstance(x, nn.LeakyReLU) for x in m.modules()), name


# Supp. Table 2, N(->seg)(depth, normals) on NYUD (128x160 maps, 40 classes); the table names two
# consecutive rows "C3m": the second is c3m_2 here.
TABLE2 = [("c1.depth", 3, 64, 1, (128, 160), False), ("c2.depth", 3, 128, 2, (64, 80), True),
          ("c1.normals", 3, 64, 1, (128, 160), False), ("c2.normals", 3, 128, 2, (64, 80), True),
          ("c3m", 3, 256, 2, (32, 40), False), ("c3m_2", 3, 512, 2, (16, 20), True),
          ("c4m", 3, 512, 1, (16, 20), True), ("en", 3, 1024, 2, (8, 10), False),
          ("up.0", 3, 512, 2, (16, 20), True), ("up.1", 3, 512, 2, (32, 40), True),
          ("up.2", 3, 256, 2, (64, 80), True), ("up.3", 3, 128, 2, (128, 160), True),
          ("c9", 1, 40, 1, (128, 160), None)]
# Supp. Table 1, UM-Adapt-B's discriminator (ResNet-50 latent 8x10x2048). C2m: stride 2 where the
# table prints 1, and C3m reads C2m where it prints C1m: its own output sizes need both.
TABLE1 = [("c1.depth", 3, 64, 1, (128, 160), False), ("c2.depth", 3, 128, 2, (64, 80), True),
          ("c1.normals", 3, 64, 1, (128, 160), False), ("c2.normals", 3, 128, 2, (64, 80), True),
          ("c3nd", 3, 256, 2, (32, 40), False), ("c1m", 1, 512, 1, (8, 10), False),
          ("c2m", 3, 512, 2, (16, 20), True), ("c3m", 3, 256, 2, (32, 40), True),
          ("c1.semantic", 3, 64, 1, (128, 160), False), ("c2.semantic", 3, 128, 2, (64, 80), True),
          ("c3s", 3, 256, 2, (32, 40), True), ("c1c", 1, 512, 1, (32, 40), False),
          ("c2c", 3, 1024, 2, (16, 20), True), ("c3c", 3, 512, 2, (8, 10), True), ("c4c", 1, 1, 1, (8, 10), None)]


def test_task_transfer_network_is_supplementary_table_2():
    with torch.device("meta"):
        net = TaskTransferNet("semantic", ["depth", "normals"], 40, width=64)
        _check_table(net, TABLE2, [{"depth": torch.zeros(1, 1, 128, 160), "normals": torch.zeros(1, 3, 128, 160)}])
        # outdoors (128x256 maps): N(->depth)(seg), bottleneck at 8x16, depth out at the input's size
        out = TaskTransferNet("depth", ["semantic"], 19, width=64)
        assert out.en(out.c4m(out.c3m_2(out.c3m(out.c2.semantic(out.c1.semantic(
            torch.zeros(1, 19, 128, 256))))))).shape == (1, 1024, 8, 16)
        assert out({"semantic": torch.zeros(1, 19, 128, 256)}).shape == (1, 128, 256)
    small = TaskTransferNet("semantic", ["depth"], 11, width=8)        # --transfer-width 8: widths / 8
    assert small.en[0].out_channels == 128 and small.c1.depth[0].out_channels == 8
    assert small({"depth": torch.rand(2, 1, 15, 33)}).shape == (2, 11, 15, 33)   # any size comes back


def test_joint_discriminator_is_supplementary_table_1():
    with torch.device("meta"):
        d = JointDiscriminator(2048, ["semantic", "depth", "normals"], 40, width=64)
        maps = [torch.zeros(1, 40, 128, 160), torch.zeros(1, 1, 128, 160), torch.zeros(1, 3, 128, 160)]
        _check_table(d, TABLE1, [torch.zeros(1, 2048, 8, 10), *maps])
    two = JointDiscriminator(64, ["semantic", "depth"], 19, width=8)   # outdoors: no normal branch
    assert two.c3nd[0].in_channels == 16 and two(torch.rand(2, 64, 2, 4), torch.rand(2, 19, 32, 64),
                                                 torch.rand(2, 1, 32, 64)).shape == (2, 1, 2, 4)


def test_gradient_penalty_by_hand():
    """Gulrajani et al. eq. 3: lam E[(||grad D(x_hat)||_2 - 1)^2]. A linear critic D(x) = <w, x>
    has grad w at every x: penalty 10 (5 - 1)^2 = 160 for ||w|| = 5, and d/dw = 20 (||w|| - 1)
    w / ||w|| = 16 w. Two inputs share one norm: ||(u, v)|| = sqrt(1 + 4). D(x) = ||x||^2 / 2 has
    grad x_hat = eps real + (1 - eps) fake, each sample's own norm."""
    w = torch.zeros(1, 2, 2, 2)
    w.view(-1)[:2] = torch.tensor([3.0, 4.0])
    w = nn.Parameter(w)
    real, fake = torch.randn(4, 2, 2, 2), torch.randn(4, 2, 2, 2)
    gp = losses.gradient_penalty(lambda x: (x * w).sum((1, 2, 3)), [real], [fake], 10.0)
    assert gp.item() == pytest.approx(160.0)
    gp.backward()
    assert torch.allclose(w.grad, 16 * w.detach())
    u, v = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])
    gp = losses.gradient_penalty(lambda a, b: a @ u + b @ v, [torch.randn(3, 2)] * 2, [torch.randn(3, 2)] * 2, 10.0)
    assert gp.item() == pytest.approx(10 * (math.sqrt(5) - 1) ** 2)
    torch.manual_seed(0)
    gp = losses.gradient_penalty(lambda x: x.square().sum(1)[:, None] / 2, [real.flatten(1)], [fake.flatten(1)], 1.0)
    torch.manual_seed(0)
    eps = torch.rand(4)[:, None]          # the draw the penalty makes first
    norm = (eps * real.flatten(1) + (1 - eps) * fake.flatten(1)).norm(dim=1)
    assert gp.item() == pytest.approx(((norm - 1) ** 2).mean().item(), rel=1e-5)
    # two-sided: a gradient norm below 1 is penalised too, ||w|| = 0.5: 10 (0.5 - 1)^2 = 2.5
    gp = losses.gradient_penalty(lambda x: (x * w.detach() / 10).sum((1, 2, 3)), [real], [fake], 10.0)
    assert gp.item() == pytest.approx(2.5)
    # the WGAN losses: critic E[D(fake)] - E[D(real)], generator -E[D(fake)], patches averaged
    d_real, d_fake = torch.tensor([3.0, 3.0]).view(2, 1, 1, 1), torch.tensor([[0.0, 0.0], [2.0, 2.0]]).view(2, 1, 2, 1)
    assert losses.wgan_critic_loss(d_real, d_fake).item() == -2.0 and losses.wgan_generator_loss(d_fake).item() == -1.0


def test_pseudo_softmax_statistics():
    """Supp.: the true class ~ Normal(1, 0.075) truncated to [0, 1] (mean 1 - 0.075 phi(0) / 0.5 =
    0.9402, std 0.075 sqrt(1 - 2 / pi) = 0.0452), values in [0, 1] summing to 1; ignored pixels
    all 0; true_maps gives exactly half of a batch of 4 as pseudo-softmax, the rest one-hot."""
    torch.manual_seed(0)
    labels = torch.randint(0, 11, (4, 48, 64))
    labels[:, :8] = 255
    valid = labels != 255
    p = lu.pseudo_softmax(labels, 11)
    assert ((p >= 0) & (p <= 1)).all() and (p.sum(1)[~valid] == 0).all()
    assert torch.allclose(p.sum(1)[valid], torch.ones(())) and (p.argmax(1)[valid] == labels[valid]).all()
    true = p.gather(1, labels.clamp_max(10)[:, None])[:, 0][valid]
    assert true.mean().item() == pytest.approx(1 - 0.075 / math.sqrt(2 * math.pi) / 0.5, abs=2e-3)
    assert true.std().item() == pytest.approx(0.075 * math.sqrt(1 - 2 / math.pi), abs=3e-3)
    for _ in range(3):
        maps = lu.true_maps({"semantic": labels}, 11, 0.5)["semantic"]
        one_hot = [bool((m.amax(0)[v] == 1).all()) for m, v in zip(maps, valid)]
        assert sum(one_hot) == 2 and torch.allclose(maps.sum(1)[valid], torch.ones(()))
    assert all(bool((m.amax(0)[v] == 1).all()) for m, v in zip(lu.true_maps({"semantic": labels}, 11)["semantic"],
                                                                 valid))
    assert sum(int(lu.pick_share(3, 0.5).sum()) for _ in range(400)) / 400 == pytest.approx(1.5, abs=0.15)


def test_gradient_mask_statistics():
    """Supp.: "a randomly generated gradient mask layer (50% of the batch without masking)":
    identity forward; backward, half the samples pass whole, the others MASK_KEEP of their
    pixels (the channels of a pixel together)."""
    torch.manual_seed(0)
    x = torch.randn(8, 3, 32, 32, requires_grad=True)
    y = lu.grad_mask(x, 0.5)
    assert torch.equal(y, x)
    y.sum().backward()
    passed = x.grad.mean((1, 2, 3))
    assert int((passed == 1).sum()) == 4 and (x.grad.amin(1) == x.grad.amax(1)).all()
    assert passed[passed < 1].mean().item() == pytest.approx(lu.MASK_KEEP, abs=0.05)
    preds = {"semantic": torch.randn(2, 5, 4, 4, requires_grad=True), "depth": torch.rand(2, 4, 4)}
    maps = lu.predicted_maps(preds, 0.0)
    assert torch.allclose(maps["semantic"], preds["semantic"].softmax(1)) and maps["depth"].shape == (2, 1, 4, 4)


def test_two_targets_each_get_labelled_and_unlabelled_batches():
    """Sec. 4.1: labelled and unlabelled batches alternate for S, and KITTI and Cityscapes
    alternate within each (it % 2 for both would give target 0 every labelled batch)."""
    loaders = {k: itertools.repeat({"name": [k]}) for k in ("src", "tgt0", "tgt1", "lab0", "lab1")}
    args = SimpleNamespace(targets=["cityscapes", "kitti_depth"])
    drawn = [um.draw(loaders, it, args, True)["tgt"]["name"][0] for it in range(4)]
    assert drawn == ["lab0", "tgt0", "lab1", "tgt1"]
    assert [um.schedule(it, 2, True)[1] for it in range(4)] == [True, False, True, False]
    assert [um.draw(loaders, it, args, False)["tgt"]["name"][0] for it in range(3)] == ["tgt0", "tgt1", "tgt0"]
    assert [um.schedule(it, 1, True) for it in range(3)] == [(0, True), (0, False), (0, True)]


def test_s_label_sets_from_the_presets():
    """Supp.: "only depth-map ground-truth for KITTI and only segmentation map ground-truth for
    Cityscapes"; Sec. 4.1: NYUv2's three tasks. Without a list, every label a target has."""
    from lib.args import apply_preset
    parse = um.get_args_parser().parse_args

    def sets(argv, names):
        return um.check_args(apply_preset(parse(argv), um.PRESETS, names, log=None)).label_sets
    assert sets(["--src", "folder", "--tgt", "cityscapes,kitti_depth"], ["folder", "cityscapes", "kitti_depth"]) \
        == {"cityscapes": ["semantic"], "kitti_depth": ["depth"]}
    assert sets(["--src", "folder", "--tgt", "nyuv2"], ["folder", "nyuv2"]) == \
        {"nyuv2": ["semantic", "depth", "normals"]}
    assert sets([], ["proc-a", "proc-b"]) == {"proc-b": ["semantic", "depth", "normals"]}
    # a task subset on real data reads its own labels only (the preset keeps to --tasks)
    assert sets(["--src", "folder", "--tgt", "nyuv2", "--tasks", "depth", "normals", "--transfer", "--variant", "b"],
                ["folder", "nyuv2"]) == {"nyuv2": ["depth", "normals"]}
    assert sets(["--src", "folder", "--tgt", "cityscapes,kitti_depth", "--tasks", "depth", "--transfer", "--variant", "b"],
                ["folder", "cityscapes", "kitti_depth"]) == {"kitti_depth": ["depth"], "cityscapes": []}
    # ... where S would read none of Cityscapes' labels rather than its depth, and refuses
    args = um.get_args_parser().parse_args(["--src", "folder", "--tgt", "cityscapes,kitti_depth", "--tasks", "depth",
                                            "normals", "--transfer", "depth=normals", "--variant", "s", "--stage", "adapt"])
    with pytest.raises(engine.UserError, match="--variant s needs target labels"):
        um.main(args)
    assert sets(["--target-labels", "proc-b=depth"], ["proc-a", "proc-b"]) == {"proc-b": ["depth"]}
    with pytest.raises(engine.UserError, match="expected NAME=T"):
        sets(["--src", "folder", "--tgt", "cityscapes,kitti_depth", "--target-labels", "kitti_depth=semantic"],
             ["folder", "cityscapes", "kitti_depth"])


@pytest.fixture(scope="module")
def outdoor(module_tmp):
    """GTA5 with depth (folder) -> Cityscapes without disparity/ + KITTI, the outdoor paper preset at
    tiny sizes: every stage and Adv, then S for 4 iterations, recording what S's loaders read and
    which batches its steps took."""
    from lib.data.labels import CLASS_NAMES
    from tests import trees
    root = module_tmp("umadapt_outdoor")
    trees.cityscapes(str(root), depth=False)
    trees.kitti(str(root))
    src = trees.folder(str(root), "gta5d", size=(66, 120), labels=("semantic", "depth"), classes=CLASS_NAMES[19])
    flags = ["--src", "folder", "--src-root", src.root, "--tgt", "cityscapes,kitti_depth", "--data-root", str(root),
             "--backbone", "resnet-tiny", "--pretrained", "none", "--size", "32", "64", "--resize", "32", "64",
             "--batch-size", "2", "--workers", "0", "--eval-batches", "1", "--decoder-width", "16",
             "--transfer-width", "8", "--d-width", "8", "--class-weight-images", "2", "--iters", "4",
             "--device", "cpu", "--output-dir", str(root / "run")]
    base = um.main(um.get_args_parser().parse_args(flags + ["--stage", "all"]))
    loaded, steps = [], []
    with pytest.MonkeyPatch.context() as mp:
        real_build, real_s, real_g = um.build_dataset, um.s_step, um.energy_g_step
        mp.setattr(um, "build_dataset", lambda name, split, *a, **kw: loaded.append((name, split, kw["labels"]))
                   or real_build(name, split, *a, **kw))
        mp.setattr(um, "s_step", lambda net, nets, optims, lab, *a: steps.append(
            ("labelled", lab["name"][0].split("/")[0], sorted(set(lab) & {"semantic", "depth"})))
            or real_s(net, nets, optims, lab, *a))
        mp.setattr(um, "energy_g_step", lambda net, nets, aux, optims, tgt, *a: steps.append(
            ("unlabelled", tgt["name"][0].split("/")[0], sorted(set(tgt) & {"semantic", "depth"})))
            or real_g(net, nets, aux, optims, tgt, *a))
        s = um.main(um.get_args_parser().parse_args(flags + ["--stage", "adapt", "--variant", "s"]))
    return base, s, loaded, steps


def test_s_on_two_targets_reads_kitti_depth_and_cityscapes_semantics(outdoor):
    _, _, loaded, steps = outdoor
    train = {(name, tuple(labels)) for name, split, labels in loaded if split == "train" and name != "folder"}
    assert train == {("cityscapes", ("edges",)), ("kitti_depth", ("edges",)),       # unlabelled: contours
                     ("cityscapes", ("semantic",)), ("kitti_depth", ("depth",))}     # labelled
    assert steps == [("labelled", "cityscapes", ["semantic"]), ("unlabelled", "cityscapes", []),
                     ("labelled", "kitti_depth", ["depth"]), ("unlabelled", "kitti_depth", [])]


def test_cityscapes_without_disparity_is_scored_on_semantics(outdoor):
    base, s, _, _ = outdoor
    for m in (base, s):
        assert "mIoU" in m["target"]["cityscapes"] and "abs_rel" not in m["target"]["cityscapes"]
        assert "abs_rel" in m["target"]["kitti_depth"] and "mIoU" not in m["target"]["kitti_depth"]


def test_margin_compares_discrepancies_not_the_predictions_entropy():
    """The soft CE of a predicted semantic tuple is H(softmax(target)) + KL: N cannot go below
    H. A uniform prediction over 11 classes has H = log 11 = 2.398; N matching it exactly has
    E_tgt = log 11, KL 0. With E_src = 1 and margin 2 (m = 2): measured on the CE the target
    term would be flat (2 - 2.398 < 0) and N never adversarial; above the floor it is active,
    m - KL = 2, with dL_D/dE_tgt = -1."""
    target = torch.zeros(1, 11, 2, 2)
    floor = lu.energy_floor("semantic", target)
    assert floor.item() == pytest.approx(math.log(11))
    pred = torch.zeros(1, 11, 2, 2, requires_grad=True)
    e_tgt = lu.task_loss("semantic", pred, target)
    assert e_tgt.item() == pytest.approx(math.log(11))
    e_src = torch.tensor(1.0, requires_grad=True)
    assert lu.margin_d_loss(e_src, e_tgt.detach(), 2.0).item() == pytest.approx(1.0)      # flat without it
    e_tgt_leaf = e_tgt.detach().requires_grad_()
    loss = lu.margin_d_loss(e_src, e_tgt_leaf, 2.0, floor)
    assert loss.item() == pytest.approx(1.0 + 2.0)
    loss.backward()
    assert e_tgt_leaf.grad.item() == -1.0 and e_src.grad.item() == 1.0
    # a sharp prediction has almost no floor; depth and labelled targets have none
    sharp = torch.zeros(1, 3, 1, 1)
    sharp[0, 0] = 30.0
    assert lu.energy_floor("semantic", sharp).item() < 1e-9
    assert lu.energy_floor("depth", torch.rand(1, 2, 2)).item() == 0.0
    assert lu.energy_floor("semantic", torch.zeros(1, 2, 2, dtype=torch.long)).item() == 0.0


def test_batch_stats_res5_normalises_with_batch_statistics_and_moves_nothing():
    """UM-Adapt-B's real latent: Ms's res5 with batch statistics like Mt's, running statistics
    and weights unchanged. A BatchNorm alone: train mode gives per-channel batch mean 0 (beta),
    eval mode the running statistics'."""
    enc = SimpleNamespace(layer4=nn.Sequential(nn.BatchNorm2d(3)))
    enc.layer4[0].running_mean.fill_(5.0)
    enc.layer4[0].eval()
    res5 = batch_stats_res5(enc)
    x = torch.randn(4, 3, 2, 2) + 10.0
    y = res5(x)
    assert torch.allclose(y.mean((0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.equal(res5[0].running_mean, torch.full((3,), 5.0)) and not res5[0].weight.requires_grad
    assert enc.layer4[0](x).mean().item() == pytest.approx(float((x - 5.0).mean() / math.sqrt(1 + 1e-5)), rel=1e-4)
    # a frozen (freeze_bn'd) Ms gives a copy in batch statistics all the same: its hook is not carried over
    from lib.models import freeze_bn
    freeze_bn(enc.layer4)
    y = batch_stats_res5(enc)(x)
    assert torch.allclose(y.mean((0, 2, 3)), torch.zeros(3), atol=1e-5)


def test_stages_feed_pseudo_softmax_masks_and_critic_the_way_the_supplementary_says(tmp_path, monkeypatch):
    """Wiring: N's training reads ground truth with the --pseudo-softmax share, the res5 steps
    read predictions behind the --grad-mask share, the Adv N step compares source ground truth
    (pseudo-softmax) against unmasked predictions with the entropy floor; UM-Adapt-B's critic
    loss is D(fake) - D(real) with real = (Ms(x_s) through batch-statistics res5, ground truth),
    the generator's loss -D on the target pair."""
    calls = {"true": [], "pred": [], "floor": [], "critic": [], "gen": [], "d_in": []}
    wrap = {"true_maps": ("true", lambda a, k: a[2] if len(a) > 2 else k.get("pseudo", 0.0)),
            "predicted_maps": ("pred", lambda a, k: a[1] if len(a) > 1 else k.get("mask", 0.0))}
    for name, (key, pick) in wrap.items():
        orig = getattr(um, name)
        monkeypatch.setattr(um, name, lambda *a, _o=orig, _k=key, _p=pick, **k: (calls[_k].append(_p(a, k)),
                                                                                 _o(*a, **k))[1])
    orig_floor, orig_margin = um.energy_floor, um.margin_d_loss
    monkeypatch.setattr(um, "energy_floor", lambda t, y: (calls["floor"].append((t, orig_floor(t, y))),
                                                          calls["floor"][-1][1])[1])
    margins = []
    monkeypatch.setattr(um, "margin_d_loss", lambda e_s, e_t, r, floor=0.0: (margins.append(floor),
                                                                             orig_margin(e_s, e_t, r, floor))[1])
    flags = ("--pseudo-softmax", "0.25", "--grad-mask", "0.75")
    run(tmp_path, "--stage", "all", "--variant", "noadv", *flags, iters=1)     # transfer, base, ccr, noadv
    for k in calls:
        calls[k].clear()
    run(tmp_path, "--stage", "adapt", "--variant", "adv", *flags, iters=1)
    # Adv alone: L_D's source tuples with pseudo-softmax (0.0: N scored on val one-hot at the end),
    # L_G behind the mask, L_D's target tuple unmasked (0.0: no gradient reaches the prediction there)
    assert 0.25 in calls["true"] and set(calls["true"]) <= {0.25, 0.0}
    assert 0.75 in calls["pred"] and 0.0 in calls["pred"] and set(calls["pred"]) <= {0.75, 0.0}
    assert [t for t, _ in calls["floor"]] == ["semantic", "depth"]     # the tasks with an N (cpu preset)
    (_, f_sem), (_, f_depth) = calls["floor"]
    assert len(margins) == 2 and margins[0] is f_sem and f_sem > 0 and margins[1] is f_depth and f_depth == 0
    import json
    diag = json.loads((tmp_path / "adapt-adv" / "metrics.json").read_text())["transfer_source"]
    assert "mIoU" in diag and "abs_rel" in diag and "mean" not in diag      # N(->semantic), N(->depth)
    energies = json.loads((tmp_path / "adapt-adv" / "metrics.json").read_text())["energies"]
    assert set(energies) == {"source", "proc-b"} and set(energies["source"]) == {"e_semantic", "e_depth"}
    tgt = energies["proc-b"]
    assert tgt["e_semantic"] >= tgt["floor_semantic"] > 0 and tgt["floor_depth"] == 0   # soft CE = H + KL >= H
    orig_fwd = JointDiscriminator.forward
    monkeypatch.setattr(JointDiscriminator, "forward", lambda self, z, *m: (calls["d_in"].append(z.detach().clone()),
                                                                           orig_fwd(self, z, *m))[1])
    for name in ("wgan_critic_loss", "wgan_generator_loss"):
        orig = getattr(losses, name)
        monkeypatch.setattr(losses, name, lambda *a, _o=orig, _n=name: (calls["critic" if "critic" in _n else "gen"]
                                                                        .append([x.detach() for x in a]), _o(*a))[1])
    real_z, res5s = [], []
    orig_b, orig_res5 = um.b_step, um.batch_stats_res5
    monkeypatch.setattr(um, "b_step", lambda ms, *a: orig_b(lambda x: (real_z.append(ms(x)), real_z[-1])[1], *a))
    modes = []

    def recorded(enc):
        res5s.append(orig_res5(enc))
        for m in res5s[-1].modules():
            if isinstance(m, nn.BatchNorm2d):
                m.register_forward_pre_hook(lambda mod, _: modes.append((mod.training, mod.momentum)))
        return res5s[-1]
    monkeypatch.setattr(um, "batch_stats_res5", recorded)
    run(tmp_path, "--stage", "adapt", "--variant", "b", iters=1)
    # the real latent came through the batch-statistics copy (BatchNorm in train mode, momentum 0 at
    # forward time), once per step, not through Ms's eval-mode res5
    assert modes and set(modes) == {(True, 0.0)} and len(real_z) == 1
    (d_real, d_fake), = calls["critic"]
    (d_gen,), = calls["gen"]
    # D's calls in b_step: the generator's (fake), then critic real, critic fake, then the penalty's
    z_gen, z_real, z_fake = calls["d_in"][:3]
    assert torch.equal(z_real, real_z[0].float()) and torch.equal(z_gen, z_fake) and not torch.equal(z_real, z_fake)
    assert d_real.shape == d_fake.shape and torch.equal(d_gen, d_fake)


def test_refusals_that_keep_a_cue_or_a_label_out():
    """--target-bn-stats with B leaves a BatchNorm-mode cue below res5; S with a target left without
    labels is refused under --stage all too (not only --stage adapt)."""
    parse = um.get_args_parser().parse_args
    with pytest.raises(engine.UserError, match="--target-bn-stats with --variant b"):
        um.check_args(parse(["--stage", "adapt", "--variant", "b", "--target-bn-stats"]))
    args = parse(["--src", "folder", "--tgt", "cityscapes,kitti_depth", "--tasks", "depth", "normals", "--transfer",
                  "depth=normals", "--variant", "s", "--stage", "all", "--target-labels", "cityscapes=", "kitti_depth=depth"])
    with pytest.raises(engine.UserError, match="--variant s needs target labels"):
        um.check_args(args)
