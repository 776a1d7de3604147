"""train_umadapt.py on tiny procedural data: every stage and variant end to end from one run
folder; N(->t) frozen in base training and in every adaptation but Adv; only res5 of Mt
changes; C_contour frozen after its stage; Algorithm 2's energy signs on a hand-made example;
Algorithm 1's one Adam per task; the class weights, sizes and errors worked out by hand."""
import pytest
import torch
import torch.nn as nn

import train_umadapt as um
from lib import engine
from lib.models.umadapt import UMAdaptNet, unpool2x

TINY = ["--size", "32", "64", "--batch-size", "2", "--proc-length", "8", "--workers", "0",
        "--eval-batches", "1", "--log-every", "1", "--device", "cpu", "--backbone", "resnet-tiny",
        "--decoder-width", "16", "--transfer-width", "8", "--class-weight-images", "4"]


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
    e_s, e_t = um.energy(nets, "depth", *src), um.energy(nets, "depth", *tgt)
    assert e_s.item() == pytest.approx(2.6) and e_t.item() == pytest.approx(0.52)
    loss = um.margin_d_loss(e_s, e_t, 2.0)
    assert loss.item() == pytest.approx(2.6 + 5.2 - 0.52)
    loss.backward()
    assert n.w.grad.item() == pytest.approx(15.0)
    with torch.no_grad():
        n.w -= 0.01 * n.w.grad
    assert um.energy(nets, "depth", *src) < e_s and um.energy(nets, "depth", *tgt) > e_t
    # Past the margin the target term is flat: L_D stays bounded below by E_src.
    e_s, e_t = torch.tensor(1.0, requires_grad=True), torch.tensor(3.0, requires_grad=True)
    um.margin_d_loss(e_s, e_t, 2.0).backward()
    assert e_s.grad.item() == 1.0 and e_t.grad.item() == 0.0


def test_soft_semantic_energy_is_cross_entropy_of_predicted_probabilities():
    logits, target = torch.tensor([[[[0.0]], [[1.0]]]]), torch.tensor([[[[2.0]], [[0.0]]]])
    p = target.softmax(1)[0, :, 0, 0]
    logq = logits.log_softmax(1)[0, :, 0, 0]
    assert um.task_loss("semantic", logits, target).item() == pytest.approx(-(p * logq).sum().item())


def test_median_frequency_weights_by_hand():
    """f = pixels / pixels of the images holding the class = (0.1, 0.3, -, 0.6); median 0.3."""
    w = um.median_frequency_weights(torch.tensor([10.0, 30, 0, 60]).double(),
                                    torch.tensor([100.0, 100, 0, 100]).double())
    assert torch.allclose(w, torch.tensor([3.0, 1.0, 0.0, 0.5]))


def test_output_sizes_are_sec_4_1s():
    net = UMAdaptNet("resnet18", tasks=["depth"], decoder_width=16).eval()
    for size, out in (((228, 304), (128, 160)), ((256, 512), (128, 256))):
        assert um.output_size(size) == out
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
    assert um.output_size(b.size) == (128, 256) and um.check_args(b).targets == ["cityscapes", "kitti_depth"]


def test_a_task_subset_without_transfer_networks_skips_the_transfer_stage(tmp_path):
    """Any subset of tasks; no --transfer: plain multi-task base, and UM-Adapt-B still adapts."""
    m = run(tmp_path, "--tasks", "depth", "normals", "--transfer", "--variant", "b", iters=1)
    assert not (tmp_path / "transfer").exists() and (tmp_path / "ccr" / "model.pth").is_file()
    assert m["variant"] == "b" and "abs_rel" in m["target"]["proc-b"] and "mIoU" not in m["target"]["proc-b"]
