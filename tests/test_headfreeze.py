"""train_headfreeze.py on tiny procedural data and a tiny `folder` tree: every variant of
Tables 1-2 end to end; after the freeze the head (the layers after the second upsampling layer,
skip weights included) is bit-identical after further training while the rest changes; the
target's main-task labels are read by the oracle alone; Ganin's reversal weight and the
discriminator accuracy against hand values; the keypoint anchor read from files."""
import json
import math

import numpy as np
import pytest
import torch

import train_headfreeze as hf
from lib import engine, losses
from lib.models.headfreeze import HeadFreezeNet
from tests import trees

TINY = ["--size", "32", "64", "--batch-size", "2", "--proc-length", "8", "--workers", "0",
        "--eval-batches", "1", "--log-every", "1", "--device", "cpu", "--backbone", "resnet-tiny",
        "--fpn-width", "16"]


def parse(*extra):
    return hf.get_args_parser().parse_args(TINY + list(extra))


def run(out_dir, *extra, iters=2):
    return hf.main(parse("--iters", str(iters), "--output-dir", str(out_dir), *extra))


def _weights(path):
    return torch.load(path, weights_only=True)["models"]["model"]


HEAD = ("lat1.", "up3.", "heads.", "kp_depth.")


@pytest.mark.parametrize("variant", list(hf.VARIANTS))
def test_every_variant_runs_end_to_end_and_reads_target_normals_only_as_oracle(tmp_path, monkeypatch, recwarn,
                                                                              variant):
    """Each row of Tables 1-2 for a step (HeadFreeze for two, switching after one). Each cosine loss of
    training sees the source batch's normals, and the target's only under the oracle: other
    variants never even load them. No scheduler-order warning: HeadFreeze+DA's discriminators,
    idle before the switch, have their schedules stepped through engine.step_schedulers."""
    seen, batches = [], []
    real_loss, real_step = losses.cosine_normal_loss, hf.train_step
    monkeypatch.setattr(hf.losses, "cosine_normal_loss",
                        lambda pred, target, *a, **k: (seen.append(target), real_loss(pred, target, *a, **k))[1])

    def step(model, discs, src, tgt, *rest):
        batches.append((src, tgt, len(seen)))
        return real_step(model, discs, src, tgt, *rest)
    monkeypatch.setattr(hf, "train_step", step)
    m = run(tmp_path, "--variant", variant, "--freeze-at", "1", iters=2 if "headfreeze" in variant else 1)
    for i, (src, tgt, first) in enumerate(batches):
        last = batches[i + 1][2] if i + 1 < len(batches) else len(seen)
        mine = seen[first:last]
        assert torch.equal(mine[0], src["normals"])
        assert tgt is None or ("normals" in tgt) == (variant == "oracle")
        assert len(mine) == (2 if variant == "oracle" else 1)
        if variant == "oracle":
            assert torch.equal(mine[1], tgt["normals"])
    assert not [w for w in recwarn if "lr_scheduler.step()" in str(w.message)]
    assert m["variant"] == variant and m["selection"] == "last"
    assert m["head_frozen"] == variant.startswith("headfreeze")
    for dom in ("source", "target"):
        assert set(m[dom]) == {"pct_11_25", "pct_30", "rmse_deg", "mean", "median", "mIoU"}
        assert 0 <= m[dom]["pct_11_25"] <= m[dom]["pct_30"] <= 100
        assert m[dom]["mean"] <= m[dom]["rmse_deg"]          # a mean never exceeds the RMS
    assert (m["d_acc_below_55"] is not None) == variant.endswith("+da")
    models = set(torch.load(tmp_path / "checkpoint.pth", weights_only=True)["models"])
    assert models == ({"model", "d_output"} if variant.endswith("+da") else {"model"})


def test_feature_alignment_has_a_critic_per_level(tmp_path):
    m = run(tmp_path, "--variant", "baseline+da", "--da", "feature", iters=1)
    models = set(torch.load(tmp_path / "checkpoint.pth", weights_only=True)["models"])
    assert models == {"model", "d_p5", "d_p4", "d_p3"}
    logged = [json.loads(line) for line in open(tmp_path / "log.jsonl")]
    assert [0 <= r["d_acc"] <= 1 and "grl" in r for r in logged if "Sm" in r] == [True]
    assert m["d_acc_below_55"] is not None


def test_model_outputs_half_resolution_and_freezes_what_follows_the_second_upsampling():
    net = HeadFreezeNet("resnet18", tasks={"normals": 3, "keypoints": 5}, width=16, keypoint_depth=5)
    out = net(torch.randn(2, 3, 64, 96))
    assert out["normals"].shape == (2, 3, 32, 48) and out["keypoints"].shape == (2, 5, 32, 48)
    assert out["keypoint_depth"].shape == (2, 5)
    assert torch.allclose(out["normals"].norm(dim=1), torch.ones(2, 32, 48), atol=1e-5)
    net.freeze_head()
    frozen = {n for n, p in net.named_parameters() if not p.requires_grad}
    assert frozen == {n for n, _ in net.named_parameters() if n.startswith(HEAD)}
    assert any(n.startswith("up2.") for n, p in net.named_parameters() if p.requires_grad)
    assert any(n.startswith("lat2.") for n, p in net.named_parameters() if p.requires_grad)
    net.train()
    assert not net.up3[1].training and net.up2[1].training   # the frozen head's BN stays in eval
    again = HeadFreezeNet("resnet18", tasks={"normals": 3, "keypoints": 5}, width=16, keypoint_depth=5)
    again.load_state_dict(net.state_dict())                  # a frozen checkpoint reloads frozen
    assert {n for n, p in again.named_parameters() if not p.requires_grad} == frozen


def test_after_the_freeze_the_head_is_bit_identical_and_the_rest_trains(tmp_path):
    """Stop at the switch, resume across it for two more steps: every head tensor (weights and
    BN statistics) is unchanged, every other layer has moved."""
    common = ("--variant", "headfreeze", "--freeze-at", "1", "--seed", "1")
    run(tmp_path, *common, "--stop-at", "1", iters=3)
    before = _weights(tmp_path / "checkpoint.pth")
    assert not before["head_frozen"]
    run(tmp_path, *common, "--resume", "auto", iters=3)
    after = _weights(tmp_path / "checkpoint.pth")
    assert after["head_frozen"]
    head = [k for k in before if k.startswith(HEAD)]
    rest = [k for k in before if not k.startswith(HEAD) and k != "head_frozen"
            and before[k].is_floating_point()]
    assert head and all(torch.equal(before[k], after[k]) for k in head)
    for prefix in ("backbone.conv1.", "backbone.layer1.", "lat4.", "lat2.", "up1.", "up2."):
        assert any(not torch.equal(before[k], after[k]) for k in rest if k.startswith(prefix)), prefix
    log = [json.loads(line) for line in open(tmp_path / "log.jsonl")]
    assert [r["iter"] for r in log if r.get("event") == "head frozen"] == [1]
    assert "Ta" not in next(r for r in log if r.get("iter") == 1 and "Sm" in r)     # eq. 4 before
    assert "Ta" in next(r for r in log if r.get("iter") == 2 and "Sm" in r)         # eq. 6 after


def test_phase_is_eq4_before_the_switch_and_eq6_after():
    a = hf.resolve_variant(parse("--variant", "headfreeze+da", "--iters", "10"))
    assert a.freeze_at == 5
    assert hf.phase(a, 4) == (True, False, False, False)
    assert hf.phase(a, 5) == (True, True, False, True)
    b = hf.resolve_variant(parse("--variant", "mtl-tgt-anchor"))
    assert hf.phase(b, 0) == (False, True, False, False)


def _step_inputs(tmp_path, variant):
    from lib.args import apply_preset
    args = parse("--variant", variant, "--iters", "2", "--freeze-at", "0", "--output-dir", str(tmp_path))
    apply_preset(args, hf.PRESETS, [args.src, args.tgt], log=None)
    hf.resolve_variant(args)
    engine.init_distributed(args)
    data_a, data_b = hf.datasets(args)
    _, net, discs, optims = hf.build(args, 11)
    src = next(engine.InfiniteLoader(data_a, 2, args, domain=0))
    tgt = next(engine.InfiniteLoader(data_b, 2, args, domain=1))
    return args, hf.RawOutputs(net).train(), discs, optims, src, tgt


def test_a_target_normal_label_stops_the_step(tmp_path):
    """The run-time guard: outside the oracle, a target batch holding normals is an error."""
    args, model, discs, optims, src, tgt = _step_inputs(tmp_path, "mtl-both-anchor")
    assert "normals" not in tgt and "semantic" in tgt
    tgt["normals"] = src["normals"]
    with pytest.raises(AssertionError, match="target normals leaked"):
        hf.train_step(model, discs, src, tgt, optims, engine.Amp("off", args.device), args, 1)


def test_gradient_reversal_follows_ganins_schedule():
    """At p = 1/2 the features receive -lambda (2 / (1 + e^-5) - 1) x the critics' gradient."""
    args = hf.resolve_variant(parse("--variant", "baseline+da", "--da", "feature", "--iters", "10",
                                    "--lambda-grl", "0.5"))
    discs = {k: torch.nn.Conv2d(4, 1, 1) for k in hf.LEVELS}
    feats = [{k: torch.randn(2, 4, 3, 3, requires_grad=True) for k in hf.LEVELS} for _ in range(2)]
    terms, stats, maps = hf.adversarial_terms(discs, {"feats": feats[0]}, {"feats": feats[1]}, args, 5)
    assert maps is None and set(terms) == {"grl"} and 0 <= float(stats["d_acc"]) <= 1
    terms["grl"].backward()
    plain = [{k: f.detach().clone().requires_grad_(True) for k, f in d.items()} for d in feats]
    ref = sum((losses.bce_adv(discs[k](plain[0][k]), 0.0) + losses.bce_adv(discs[k](plain[1][k]), 1.0)) / 2
              for k in hf.LEVELS) / 3
    ref.backward()
    lam = 0.5 * (2 / (1 + math.exp(-5)) - 1)
    assert lam == pytest.approx(0.49331, abs=1e-5)
    for d, p in zip(feats, plain):
        for k in hf.LEVELS:
            assert torch.allclose(d[k].grad, -lam * p[k].grad, atol=1e-7)


def test_discriminator_accuracy_by_hand():
    """Source logits < 0 and target logits > 0 are right: (2/4 + 3/4) / 2."""
    acc = hf.domain_accuracy(torch.tensor([-1.0, 1.0, -2.0, 3.0]), torch.tensor([1.0, 1.0, -1.0, 2.0]))
    assert float(acc) == pytest.approx(0.625)


class _Recorder:
    """An optimizer stand-in that keeps the gradients it is asked to step with."""

    def __init__(self, params):
        self.params, self.grads = list(params), None
        self.param_groups = [{"params": self.params}]   # what Amp.step reads to skip gradient-less ones

    def zero_grad(self, set_to_none=True):
        for p in self.params:
            p.grad = None

    def step(self):
        self.grads = [None if p.grad is None else p.grad.clone() for p in self.params]


def test_output_discriminator_learns_from_detached_maps_only(tmp_path):
    """Tsai's order: the network's gradient is that of Sm + adv alone (D frozen, so adv never
    reaches D) and D's is that of its own loss on the detached maps alone."""
    args, model, discs, _, src, tgt = _step_inputs(tmp_path, "baseline+da")
    d = discs["output"]
    net_params = [p for p in model.parameters()]
    optims = {"model": _Recorder(net_params), "d_output": _Recorder(d.parameters())}
    values = hf.train_step(model, discs, src, tgt, optims, engine.Amp("off", args.device), args, 0)
    assert set(values) == {"Sm", "adv", "d", "d_acc"}
    out_s, out_t = model(src["image"]), model(tgt["image"])     # batch statistics: same outputs
    n_s, n_t = (torch.nn.functional.normalize(hf._up(o["normals"], (32, 64)), dim=1) for o in (out_s, out_t))
    gen = hf.main_loss(out_s, src) + args.lambda_adv * losses.bce_adv(d(n_t), 0.0)
    used = [p for p, g in zip(net_params, optims["model"].grads) if g is not None]
    expected = torch.autograd.grad(gen, used, allow_unused=True)
    got = [g for g in optims["model"].grads if g is not None]
    assert all(e is not None and torch.allclose(a, e, atol=1e-6) for a, e in zip(got, expected))
    d_loss = (losses.bce_adv(d(n_s.detach()), 0.0) + losses.bce_adv(d(n_t.detach()), 1.0)) / 2
    d_expected = torch.autograd.grad(d_loss, list(d.parameters()))
    assert all(torch.allclose(a, e, atol=1e-7) for a, e in zip(optims["d_output"].grads, d_expected))


def test_target_through_bn_control_moves_only_batchnorm_statistics(tmp_path):
    """The baseline's control: from the same weights and batches, passing the target through in
    train mode changes BatchNorm running statistics and nothing else."""
    args, model, discs, optims, src, tgt = _step_inputs(tmp_path, "baseline")
    start = {k: v.clone() for k, v in model.state_dict().items()}
    opt_state = optims["model"].state_dict()
    results = []
    for through in (False, True):
        model.load_state_dict(start)
        optims["model"].load_state_dict(opt_state)
        args.target_through_bn = through
        hf.train_step(model, discs, src, tgt, optims, engine.Amp("off", args.device), args, 0)
        results.append({k: v.clone() for k, v in model.state_dict().items()})
    plain, bn = results
    assert any(not torch.equal(plain[k], bn[k]) for k in plain if k.endswith("running_mean"))
    assert all(torch.equal(plain[k], bn[k]) for k in plain
               if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))


@pytest.mark.parametrize("flags, message", [
    (["--variant", "mtl-both-anchor", "--target-through-bn"], "BatchNorm control"),
    (["--anchor", "keypoints"], "reads keypoints/ of the folder layout"),
    (["--keypoint-depth"], "needs --anchor keypoints"),
    (["--freeze-at", "5", "--iters", "5"], "--freeze-at must lie in"),
    (["--variant", "headfreeze+da", "--freeze-at", "0"], "--freeze-at 0 would freeze the head before"),
    (["--variant", "headfreeze", "--iters", "1"], "--iters 1 leaves no step before HeadFreeze's switch"),
    (["--variant", "baseline", "--joint-bn"], "--joint-bn has no effect with --variant baseline"),
    (["--variant", "mtl-src-anchor", "--joint-bn"], "--joint-bn has no effect with --variant mtl-src"),
])
def test_one_line_errors(tmp_path, flags, message):
    with pytest.raises(engine.UserError, match=message):
        hf.main(parse("--output-dir", str(tmp_path), *flags))
    assert not (tmp_path / "args.json").exists()


def _face_tree(root, name, k=3, size=(24, 40)):
    """A `folder` tree of faces (tests/trees.py: normals 0 outside the face mask), with hand
    keypoints: heatmap j is 1 at (5 + 3j, 10 + 5j) only, and frame i's depths are i .. i + k - 1."""
    heat = np.zeros((k, *size), np.float32)
    for j in range(k):
        heat[j, 5 + 3 * j, 10 + 5 * j] = 1.0
    trees.folder(root, name, frames=3, size=size, labels=("normals",), normals_format="npy", mask=True,
                 keypoints=heat, keypoint_depth=[np.arange(k, dtype=np.float32) + i for i in range(3)])


def test_keypoint_anchor_reads_heatmaps_and_depths_from_the_folder_layout(tmp_path):
    _face_tree(tmp_path, "syn")
    _face_tree(tmp_path, "real")
    from lib.data import build_dataset
    data = build_dataset("folder", "train", (12, 20), root=str(tmp_path / "syn"), labels=["normals"],
                         train=True, resize=(12, 20), keypoints=True, keypoint_depth=True)
    s = data[1]
    assert s["keypoints"].shape == (3, 12, 20) and s["normals"].shape == (3, 12, 20)
    assert torch.equal(s["keypoint_depth"], torch.tensor([1.0, 2.0, 3.0]))
    assert s["keypoints"].sum() > 0 and s["keypoints"][0, :, :].argmax() // 20 in (2, 3)   # row 5 of 24 -> 2.5 of 12
    m = hf.main(hf.get_args_parser().parse_args(
        ["--src", "folder", "--src-root", str(tmp_path / "syn"), "--tgt", "folder", "--tgt-root",
         str(tmp_path / "real"), "--anchor", "keypoints", "--keypoints", "3", "--keypoint-depth",
         "--variant", "headfreeze", "--iters", "2", "--freeze-at", "1", "--preset", "cpu",
         "--size", "24", "40", "--batch-size", "2", "--workers", "0", "--device", "cpu",
         "--fpn-width", "16", "--output-dir", str(tmp_path / "run")]))
    assert "mIoU" not in m["target"] and m["head_frozen"]
    w = _weights(tmp_path / "run" / "checkpoint.pth")
    assert w["heads.keypoints.weight"].shape[1] == 3 and w["kp_depth.2.weight"].shape == (3, 256)
    logged = [json.loads(line) for line in open(tmp_path / "run" / "log.jsonl")]
    assert any("Ta" in r for r in logged)
    with pytest.raises(engine.UserError, match="holds 3 keypoints, --keypoints is 4"):
        hf.main(hf.get_args_parser().parse_args(
            ["--src", "folder", "--src-root", str(tmp_path / "syn"), "--tgt", "folder", "--tgt-root",
             str(tmp_path / "real"), "--anchor", "keypoints", "--keypoints", "4", "--preset", "cpu",
             "--size", "24", "40", "--batch-size", "2", "--workers", "0", "--device", "cpu",
             "--output-dir", str(tmp_path / "run4")]))
    assert not (tmp_path / "run4" / "log.jsonl").exists() and not (tmp_path / "run4" / "args.json").exists()


@pytest.mark.parametrize("anchor, da, size", [("semantic", "output", [240, 320]),
                                              ("keypoints", "feature", [128, 128])])
def test_real_data_resolves_the_paper_preset(anchor, da, size):
    """Named real datasets pick the paper column: ResNet-50 + FPN from ImageNet, and Table 1's DA
    of each setting (Tsai indoors, Ganin on faces); an explicit flag still wins."""
    from lib.args import apply_preset
    extra = ["--anchor", anchor] + (["--tgt", "folder"] if anchor == "keypoints" else ["--tgt", "nyuv2"])
    args = hf.get_args_parser().parse_args(["--src", "folder", "--lr", "0.01"] + extra)
    apply_preset(args, hf.PRESETS, [args.src, args.tgt], log=None)
    assert args.preset_resolved == "paper"
    assert (args.backbone, args.pretrained, args.fpn_width, args.da) == ("resnet50", "imagenet", 256, da)
    assert args.resize == size and args.size == size and args.lr == 0.01


def test_bench_times_the_headfreeze_step():
    """tools/bench.py --only headfreeze runs train_headfreeze.train_step after the switch."""
    import os
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
    import bench
    res = bench.main(bench.get_args_parser().parse_args(
        ["--only", "headfreeze", "--size", "32", "64", "--batch-size", "1", "--workers", "0",
         "--steps", "1", "--warmup", "0", "--device", "cpu", "--backbone", "resnet18"]))
    h = res["headfreeze"]
    assert h["step_ms"] == pytest.approx(h["forward_ms"] + h["backward_ms"] + h["optimizer_ms"])
    assert h["images_per_s"] == pytest.approx(1 / (h["step_ms"] / 1000))


# ----------------------------------------------------------------------------- issue 21, items 9-14
def test_face_commands_report_the_test_split(tmp_path):
    """Sec. 4.1 splits the face subjects 70/15/15 and reports test: every face command of
    experiments/headfreeze.sh names --val-split test (the indoor ones score NYUv2's val, its
    official test split); none selects a model."""
    import os
    import subprocess
    env = {**os.environ, "PYTHON": "echo", "RUNS": str(tmp_path), "SFSYN": "S", "SFSYN_FRONT": "F",
           "FACEWH": "W", "DATA": "D", "INDOOR_SRC": "I"}
    for cmd in ("table1_faces", "table2_faces", "table3", "table1_indoor"):
        out = subprocess.run(["bash", "experiments/headfreeze.sh", cmd], capture_output=True, text=True,
                             env=env, check=True).stdout.splitlines()
        assert out and all(line.startswith("train_headfreeze.py") for line in out)
        faces = "--anchor keypoints" in out[0]
        assert all(("--val-split test" in line) == faces for line in out), cmd
        assert not any("select" in line for line in out)


def test_lambda_rule_is_measured_before_training_and_recorded(tmp_path):
    """Sec. 4.4's rule (--lambda-anchor auto): lambda = L_Sm / mean(L_Sa, L_Ta) on the first
    batches, logged and kept in metrics.json and the checkpoint. Measuring leaves no trace: a run
    with that value given as a fixed --lambda-anchor ends with the same weights bit for bit (BN
    buffers restored, random streams untouched). A resume keeps the measured value."""
    m = run(tmp_path / "auto", "--variant", "mtl-both-anchor", "--lambda-anchor", "auto", "--seed", "2")
    lam = m["lambda"]
    got = lam["measured"]
    assert lam["rule"] == {"anchor": "auto", "kp_depth": "fixed"} and set(got) == {"Sm", "S_ce", "T_ce"}
    on = lam["measured_on"]          # once, on the network as initialised, the first batch per domain
    assert (on["iteration"], on["domains"], on["samples_per_domain"]) == (0, ["S", "T"], 2)
    assert on["network"] == "as initialised, before the first step" and on["reading"].startswith("ours")
    assert lam["lambda_anchor"] == pytest.approx(got["Sm"] / ((got["S_ce"] + got["T_ce"]) / 2))
    log = [json.loads(line) for line in open(tmp_path / "auto" / "log.jsonl")]
    assert [r["lambda_anchor"] for r in log if r.get("event") == "lambda"] == [lam["lambda_anchor"]]
    fixed = run(tmp_path / "fixed", "--variant", "mtl-both-anchor", "--lambda-anchor", repr(lam["lambda_anchor"]),
                "--seed", "2")
    assert fixed["lambda"]["rule"]["anchor"] == "fixed" and "measured" not in fixed["lambda"]
    a, b = _weights(tmp_path / "auto" / "model.pth"), _weights(tmp_path / "fixed" / "model.pth")
    assert all(torch.equal(a[k], b[k]) for k in a)
    common = ("--variant", "headfreeze", "--lambda-anchor", "auto", "--freeze-at", "1")
    run(tmp_path / "part", *common, "--stop-at", "1", iters=3)
    first = torch.load(tmp_path / "part" / "checkpoint.pth", weights_only=True)["extra"]["lambda"]
    resumed = run(tmp_path / "part", *common, "--resume", "auto", iters=3)
    assert resumed["lambda"] == first
    log = [json.loads(line) for line in open(tmp_path / "part" / "log.jsonl")]
    assert sum(r.get("event") == "lambda" for r in log) == 1


def test_lambda_rule_balances_keypoint_depth_too(tmp_path):
    """With the keypoint anchor, --lambda-kp-depth auto = heatmap / depth loss (raw depths
    cannot swamp the heatmaps), then lambda balances the anchor against the cosine loss."""
    _face_tree(tmp_path, "syn")
    _face_tree(tmp_path, "real")
    m = hf.main(hf.get_args_parser().parse_args(
        ["--src", "folder", "--src-root", str(tmp_path / "syn"), "--tgt", "folder", "--tgt-root",
         str(tmp_path / "real"), "--anchor", "keypoints", "--keypoints", "3", "--keypoint-depth",
         "--variant", "mtl-both-anchor", "--iters", "1", "--preset", "cpu", "--lambda-anchor", "auto",
         "--lambda-kp-depth", "auto", "--size", "24", "40", "--batch-size", "2", "--workers", "0",
         "--device", "cpu", "--fpn-width", "16", "--output-dir", str(tmp_path / "run")]))
    got, lam = m["lambda"]["measured"], m["lambda"]
    heat, depth = (got["S_heat"] + got["T_heat"]) / 2, (got["S_depth"] + got["T_depth"]) / 2
    assert lam["lambda_kp_depth"] == pytest.approx(heat / depth)
    assert lam["lambda_anchor"] == pytest.approx(got["Sm"] / (2 * heat))


def test_paper_preset_measures_lambda_and_names_the_switch_and_layers_as_ours():
    from lib.args import apply_preset
    args = hf.get_args_parser().parse_args(["--src", "folder", "--tgt", "nyuv2"])
    apply_preset(args, hf.PRESETS, [args.src, args.tgt], log=None)
    assert (args.lambda_anchor, args.lambda_kp_depth, args.freeze_after) == ("auto", "auto", 2)
    cpu = apply_preset(parse(), hf.PRESETS, ["proc-a", "proc-b"], log=None)
    assert (cpu.lambda_anchor, cpu.lambda_kp_depth) == (1.0, 1.0)
    assert "ours" in hf.PRESETS["freeze_at"][1] and "ours" in hf.PRESETS["freeze_after"][1]
    assert hf.resolve_variant(parse("--iters", "10")).freeze_at == 5
    with pytest.raises(SystemExit):
        hf.get_args_parser().parse_args(["--lambda-anchor", "lots"])


@pytest.mark.parametrize("after, frozen", [
    (3, {"heads", "kp_depth"}), (2, {"up3", "lat1", "heads", "kp_depth"}),
    (1, {"up2", "lat2", "up3", "lat1", "heads", "kp_depth"})])
def test_freeze_after_picks_the_layers_to_freeze(after, frozen):
    net = HeadFreezeNet("resnet-tiny", tasks={"normals": 3, "keypoints": 2}, width=8, keypoint_depth=2,
                        freeze_after=after)
    net.freeze_head()
    assert {n.split(".")[0] for n, p in net.named_parameters() if not p.requires_grad} == frozen


def test_freeze_after_reaches_the_run(tmp_path):
    m = run(tmp_path, "--variant", "headfreeze", "--freeze-at", "1", "--freeze-after", "1")
    assert (m["freeze_at"], m["freeze_after"], m["head_frozen"]) == (1, 1, True)
    ckpt = torch.load(tmp_path / "model.pth", weights_only=True)
    assert ckpt["model_specs"]["model"]["kwargs"]["freeze_after"] == 1


def test_joint_bn_normalises_both_domains_in_one_pass(tmp_path):
    """--joint-bn: one forward of source and target together, so BN's running statistics are
    those of the joint batch; by default one forward per domain (the paper is silent)."""
    args, model, discs, optims, src, tgt = _step_inputs(tmp_path, "mtl-both-anchor")
    start = {k: v.clone() for k, v in model.state_dict().items()}
    bn = next(k for k in start if k.endswith("running_mean"))
    model(torch.cat([src["image"], tgt["image"]]))              # the reference: one joint pass
    joint_ref = model.state_dict()[bn].clone()
    results = {}
    for joint in (True, False):
        model.load_state_dict(start)
        args.joint_bn = joint
        hf.train_step(model, discs, src, tgt, optims, engine.Amp("off", args.device), args, 1)
        results[joint] = model.state_dict()[bn].clone()
    assert torch.allclose(results[True], joint_ref, atol=1e-6)
    assert not torch.allclose(results[False], joint_ref, atol=1e-6)
    out_s, out_t = hf.forward(model, src, tgt, args)
    assert out_s["normals"].shape[0] == src["image"].shape[0] and set(out_t["feats"]) == set(hf.LEVELS + ("p2",))


def test_headfreeze_da_schedules_start_at_the_switch():
    """HeadFreeze+DA trains its adversary from the switch: Ganin's p is 0 there (so is the
    reversal weight) and the discriminators' poly decay starts there; the network's runs from 0."""
    args = hf.resolve_variant(parse("--variant", "headfreeze+da", "--da", "feature", "--iters", "10",
                                    "--freeze-at", "4"))
    assert [hf.grl_progress(args, it) for it in (0, 4, 7, 10)] == [0.0, 0.0, 0.5, 1.0]
    feats = [{k: torch.randn(2, 4, 3, 3, requires_grad=True) for k in hf.LEVELS} for _ in range(2)]
    discs = {k: torch.nn.Conv2d(4, 1, 1) for k in hf.LEVELS}
    terms, _, _ = hf.adversarial_terms(discs, {"feats": feats[0]}, {"feats": feats[1]}, args, 4)
    terms["grl"].backward()
    assert all(f[k].grad.abs().max() == 0 for f in feats for k in hf.LEVELS)   # weight 0 at the switch
    base = hf.resolve_variant(parse("--variant", "baseline+da", "--da", "feature", "--iters", "10"))
    assert hf.grl_progress(base, 5) == 0.5
    nets = {n: torch.nn.Linear(1, 1) for n in ("model", "d_p5")}
    optims = {n: torch.optim.Adam(m.parameters(), lr=1.0) for n, m in nets.items()}
    scheds = hf.schedulers(optims, args)
    lrs = []
    for _ in range(10):
        lrs.append({n: o.param_groups[0]["lr"] for n, o in optims.items()})
        for o in optims.values():
            o.step()                         # no gradients: nothing moves, the order is kept
        for s in scheds.values():
            s.step()
    assert [r["d_p5"] for r in lrs[:5]] == [1.0] * 5
    assert lrs[7]["d_p5"] == pytest.approx((1 - 3 / 6) ** 0.9)
    assert lrs[7]["model"] == pytest.approx((1 - 7 / 10) ** 0.9)


def test_eval_every_scores_the_source_val_split(tmp_path, monkeypatch):
    """--eval-every N scores the source's val split every N steps (a curve to pick the switch
    or the stop on), logged; the reported model stays the last and the reported numbers come
    from --val-split (here test). A target label is never read by it."""
    seen = []
    real = hf.score

    def spy(net, loader, *a):
        seen.append((loader.dataset.domain, loader.dataset.split))
        return real(net, loader, *a)
    monkeypatch.setattr(hf, "score", spy)
    m = run(tmp_path, "--variant", "headfreeze", "--freeze-at", "1", "--eval-every", "1",
            "--val-split", "test", iters=3)
    assert seen == [("a", "val"), ("a", "val"), ("a", "test"), ("b", "test")]
    log = [json.loads(line) for line in open(tmp_path / "log.jsonl")]
    curve = [r["iter"] for r in log if "source_val" in r]
    assert curve == [1, 2] and {"mean", "median"} <= set(next(r for r in log if "source_val" in r)["source_val"])
    assert m["selection"] == "last" and m["val_split"] == "test"
