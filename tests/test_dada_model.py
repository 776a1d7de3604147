"""Tests for DADA's network (lib/models/dada.py, lib/models/deeplab.py) and the official mapping.

ResNet-101 appears only where the paper's network itself is the point (parameter counts,
official key list, the mapping's numerics on a tiny input); shapes and counts are taken on
the meta device. Everything else uses ResNet-18 on small inputs.
"""
import json
import os

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import evaluate
from lib.data.transforms import normalize
from lib.engine import UserError
from lib.models import MODELS, build_model, model_spec
from lib.models import dada as dada_mod
from lib.models.dada import (DadaNet, map_official_state, official_to_ours, ours_to_official,
                             to_caffe_input, to_official_state)
from tools import import_checkpoint

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def _meta(**kwargs):
    """A DadaNet on the meta device: shapes and parameters, no memory, no compute."""
    with torch.device("meta"):
        return DadaNet(**kwargs)


def _key_list(name):
    """The official (key, shape) list written by tests/data/make_official_keys.py."""
    with open(os.path.join(DATA, f"{name}_keys.json")) as f:
        return {k: tuple(s) for k, s in json.load(f)["keys"]}


def _randomised(net, seed=0):
    """net's state dict with O(1)-scaled random weights and statistics (so outputs are not ~0)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in net.state_dict().items():
        if key.endswith("num_batches_tracked"):
            out[key] = value.clone()
        elif key.endswith("running_var"):
            out[key] = torch.rand(value.shape, generator=g) + 0.5
        elif value.dim() == 4:   # conv weight, He-like scale
            out[key] = torch.randn(value.shape, generator=g) * (2.0 / value[0].numel()) ** 0.5
        else:
            out[key] = torch.randn(value.shape, generator=g) * 0.1
    return out


def _bottleneck_params(inplanes, planes, downsample):
    """Convs (no bias) + affine BN (2 per channel) of one ADVENT Bottleneck."""
    n = inplanes * planes + 9 * planes * planes + planes * 4 * planes   # conv1 1x1, conv2 3x3, conv3 1x1
    n += 2 * (planes + planes + 4 * planes)                              # bn1, bn2, bn3
    if downsample:
        n += inplanes * 4 * planes + 2 * 4 * planes                      # downsample conv + BN
    return n


def test_parameter_counts_resnet101_16_classes():
    # Trunk, from the official definition: conv1 7x7 3->64 + bn1, then (planes, blocks) =
    # (64, 3), (128, 4), (256, 23), (512, 3), the first block of each stage with a downsample.
    trunk, inplanes = 3 * 64 * 49 + 2 * 64, 64                          # 9,408 + 128
    for planes, blocks in ((64, 3), (128, 4), (256, 23), (512, 3)):
        trunk += _bottleneck_params(inplanes, planes, True)
        trunk += (blocks - 1) * _bottleneck_params(planes * 4, planes, False)
        inplanes = planes * 4
    assert trunk == 42_500_160                                          # = torchvision resnet101 minus fc
    classifier = 4 * (2048 * 16 * 9 + 16)                               # 4 x (3x3 2048->16 + bias) = 1,179,712
    depth = (2048 * 512 + 512) + (512 * 512 * 9 + 512) + (512 * 128 + 128) + (128 * 2048 + 2048)
    assert (classifier, depth) == (1_179_712, 3_738_752)
    bn = 2 * (64 + 3 * 6 * 64 + 256 + 4 * 6 * 128 + 512 + 23 * 6 * 256 + 1024 + 3 * 6 * 512 + 2048)
    assert bn == 105_344                                                 # frozen BN affine parameters
    for depth_block, total in ((False, 43_679_872), (True, 47_418_624)):
        net = _meta(backbone="resnet101", num_classes=16, depth_block=depth_block)
        assert total == trunk + classifier + depth * depth_block
        assert sum(p.numel() for p in net.parameters()) == total
        assert sum(p.numel() for p in net.parameters() if p.requires_grad) == total - bn


def test_logits_shape_ceil_mode_pooling():
    # 256x512 -> conv1 128x256 -> ceil-mode pool 65x129 -> layer2's strided 1x1 33x65.
    with torch.device("meta"):
        logits, depth = DadaNet("resnet101").forward_raw(torch.empty(1, 3, 256, 512))
    assert logits.shape == (1, 16, 33, 65) and depth.shape == (1, 33, 65)
    net = DadaNet("resnet18", num_classes=5).eval()
    with torch.no_grad():
        logits, depth = net.forward_raw(torch.randn(1, 3, 256, 512))
        out = net(torch.randn(2, 3, 50, 70))
    assert logits.shape == (1, 5, 33, 65) and depth.shape == (1, 33, 65)
    assert list(out) == ["semantic"] and out["semantic"].shape == (2, 5, 50, 70)


def test_forward_upsamples_align_corners():
    net = DadaNet("resnet18", num_classes=3, depth_block=False).eval()
    x = torch.randn(1, 3, 40, 56)
    with torch.no_grad():
        logits, depth = net.forward_raw(x)
        out = net(x)["semantic"]
    assert depth is None
    assert torch.equal(out, F.interpolate(logits, size=(40, 56), mode="bilinear", align_corners=True))


def test_official_architecture_details():
    net = _meta(backbone="resnet101")
    block = net.backbone.layer2[0]
    assert block.conv1.stride == (2, 2) and block.conv2.stride == (1, 1)      # caffe-style stride
    assert net.backbone.maxpool.ceil_mode
    for stage, d in (("layer3", 2), ("layer4", 4)):
        for b in getattr(net.backbone, stage):                                 # every block dilated
            assert b.conv2.dilation == (d, d) and b.conv2.padding == (d, d) and b.conv1.stride == (1, 1)
        assert getattr(net.backbone, stage)[0].downsample[0].stride == (1, 1)
    assert [(c.dilation[0], c.padding[0]) for c in net.classifier.convs] == [(r, r) for r in (6, 12, 18, 24)]
    assert all(c.bias is not None for c in net.classifier.convs)
    shapes = [tuple(c.weight.shape) for c in (net.depth.enc1, net.depth.enc2, net.depth.enc3, net.depth.dec)]
    assert shapes == [(512, 2048, 1, 1), (512, 512, 3, 3), (128, 512, 1, 1), (2048, 128, 1, 1)]
    r18 = _meta(backbone="resnet18")
    assert r18.backbone.channels == 512 and r18.depth.enc1.weight.shape == (512, 512, 1, 1)
    assert r18.backbone.layer4[1].conv1.dilation == (4, 4)


def test_classifier_init_normal_001():
    torch.manual_seed(0)
    net = DadaNet("resnet18", num_classes=8)
    w = torch.cat([c.weight.flatten() for c in net.classifier.convs])
    assert abs(w.std().item() - 0.01) < 5e-4 and abs(w.mean().item()) < 5e-4


def test_depth_is_channel_mean_and_fusion_is_product():
    torch.manual_seed(0)
    net = DadaNet("resnet18", num_classes=4).eval()
    net.load_state_dict(_randomised(net))
    x = torch.randn(2, 3, 48, 64)
    with torch.no_grad():
        logits, depth = net.forward_raw(x)
        feat = net.backbone(x)
        d = net.depth
        maps = d.enc3(F.relu(d.enc2(F.relu(d.enc1(feat)))))                # the 128 maps, no activation
        assert maps.shape[1] == 128
        torch.testing.assert_close(depth, maps.mean(dim=1))
        fused = feat * F.relu(d.dec(maps))                                    # element-wise product
        torch.testing.assert_close(logits, net.classifier(fused))
        assert not torch.allclose(logits, net.classifier(feat))
        summed = sum(conv(fused) for conv in net.classifier.convs)           # ASPP = sum of 4 convs
        torch.testing.assert_close(logits, summed)


@pytest.mark.parametrize("depth_block", [True, False])
def test_param_groups_cover_trainable_once(depth_block):
    net = _meta(backbone="resnet101", depth_block=depth_block)
    groups = net.param_groups(2.5e-4)
    assert [g["lr"] for g in groups] == [2.5e-4, 2.5e-3]
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in net.parameters() if p.requires_grad}
    head = list(net.classifier.parameters()) + (list(net.depth.parameters()) if depth_block else [])
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in head}
    assert len(groups[1]["params"]) == 8 + 8 * depth_block                   # 4 convs w+b (+ 4 depth convs)


def test_bn_affine_frozen_and_statistics_modes():
    net = DadaNet("resnet18", num_classes=3)
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(not p.requires_grad for m in bns for p in m.parameters())
    assert all(p.requires_grad for m in net.modules() if isinstance(m, nn.Conv2d) for p in m.parameters())
    x = torch.randn(2, 3, 48, 64)
    before = net.backbone.bn1.running_mean.clone()
    net.train()(x)                                                            # official: train-mode BN
    assert not torch.equal(before, net.backbone.bn1.running_mean)
    frozen = DadaNet("resnet18", num_classes=3, freeze_bn_stats=True)
    stats = {k: v.clone() for k, v in frozen.state_dict().items() if "running" in k}
    frozen.train()(x)
    assert all(torch.equal(v, frozen.state_dict()[k]) for k, v in stats.items())
    assert all(not p.requires_grad for m in frozen.modules() if isinstance(m, nn.BatchNorm2d)
               for p in m.parameters())


@pytest.mark.parametrize("name, depth_block", [("deeplabv2_r101", False), ("dada_r101", True)])
def test_mapping_strict_both_ways_on_official_key_list(name, depth_block):
    official = _key_list(name)
    net = _meta(backbone="resnet101", num_classes=16, depth_block=depth_block)
    ours = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert {official_to_ours(k): s for k, s in official.items()} == ours       # official -> ours
    assert {ours_to_official(k): s for k, s in ours.items()} == official       # ours -> official
    fake = {k: torch.empty(s, device="meta") for k, s in official.items()}
    mapped, skipped = map_official_state(fake, net, "official")
    assert set(mapped) == set(ours) and skipped == []
    with pytest.raises(UserError, match="missing keys: enc4_1.bias" if depth_block else "missing keys: conv1"):
        map_official_state({k: v for k, v in fake.items() if k != ("enc4_1.bias" if depth_block else
                                                                   "conv1.weight")}, net, "official")
    with pytest.raises(UserError, match="unexpected keys: layer7.x"):
        map_official_state({**fake, "layer7.x": torch.empty(1)}, net, "official")
    with pytest.raises(UserError, match=r"shape mismatch: layer6.conv2d_list.0.weight \(19, 2048, 3, 3\)"):
        map_official_state({**fake, "layer6.conv2d_list.0.weight": torch.empty(19, 2048, 3, 3)}, net, "official")
    aux = {**fake, "layer5.conv2d_list.0.weight": torch.empty(16, 1024, 3, 3)}   # ADVENT multi-level head
    assert map_official_state(aux, net, "official")[1] == ["layer5.conv2d_list.0.weight"]


def test_official_names_reproduce_forward_resnet101():
    torch.manual_seed(0)
    ref = DadaNet("resnet101", num_classes=16, depth_block=True)
    # Random tensors under the official names and shapes of the key list load, and read back equal.
    g = torch.Generator().manual_seed(1)
    listed = {k: torch.randn(s, generator=g) if s else torch.tensor(7) for k, s in _key_list("dada_r101").items()}
    dada_mod.load_official_state(ref, listed, "official")
    back = to_official_state(ref.state_dict())
    assert back.keys() == listed.keys() and all(torch.equal(back[k], v) for k, v in listed.items())
    # Our (randomised) weights renamed to the official layout load to the same forward output.
    state = _randomised(ref, seed=1)
    ref.load_state_dict(state)
    via = DadaNet("resnet101", num_classes=16, depth_block=True)
    official = {"module." + k: v for k, v in to_official_state(state).items()
                if not k.endswith("num_batches_tracked")}                         # an old, DataParallel file
    dada_mod.load_official_state(via, dada_mod._plain_state(official), "official")
    x = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        a, da = ref.eval().forward_raw(x)
        b, db = via.eval().forward_raw(x)
    assert a.abs().mean() > 1e-3
    assert torch.equal(a, b) and torch.equal(da, db)


def test_caffe_input_conversion():
    rgb = torch.rand(2, 3, 5, 6)
    expected = rgb.flip(1) * 255 - torch.tensor(dada_mod.CAFFE_MEAN_BGR).view(1, 3, 1, 1)
    torch.testing.assert_close(to_caffe_input(normalize(rgb)), expected, rtol=1e-5, atol=1e-3)


def _official_file(tmp_path, net, name="official.pth", prefix="module.", drop=()):
    """Save net's weights under the official names (a plain state dict, as the official code saves)."""
    state = {prefix + k: v for k, v in to_official_state(net.state_dict()).items() if not k.startswith(drop)}
    path = tmp_path / name
    torch.save(state, path)
    return str(path)


def test_import_checkpoint_end_to_end_then_evaluate(tmp_path):
    torch.manual_seed(0)
    net = DadaNet("resnet18", num_classes=16, caffe_input=True)
    net.load_state_dict(_randomised(net, seed=2))
    src = _official_file(tmp_path, net)
    out = str(tmp_path / "imported" / "checkpoint.pth")
    parser = import_checkpoint.get_args_parser()
    import_checkpoint.main(parser.parse_args([src, "--out", out, "--classes", "16", "--backbone", "resnet18"]))
    x = normalize(torch.rand(1, 3, 48, 64))
    with torch.no_grad():
        expected = net.eval()(x)["semantic"]
    for path in (out, src):                                                   # ours, and the .pth directly
        model, ckpt = evaluate.load_inference_model(path)
        assert ckpt["script"] == "import_checkpoint.py" and ckpt["extra"]["inference_model"] == "model"
        assert ckpt["args"]["tgt"] == "cityscapes" and ckpt["args"]["classes"] == 16
        assert ckpt["model_specs"]["model"]["kwargs"]["caffe_input"] is True
        assert not model.training and model.depth_block
        with torch.no_grad():
            torch.testing.assert_close(model(x)["semantic"], expected)
        # re-scored as the official test scores: 1024x512 input, labels at their own size
        args = evaluate.get_args_parser().parse_args(["--checkpoint", path, "--dataset", "cityscapes"])
        evaluate.inherit_run_settings(args, ckpt["args"], "cityscapes")
        assert args.native_labels is True and args.resize == [512, 1024] and args.batch_size == 1
    with pytest.raises(UserError, match="pass --no-depth"):
        nodepth = DadaNet("resnet18", num_classes=16, depth_block=False)
        import_checkpoint.main(parser.parse_args([_official_file(tmp_path, nodepth, "adv.pth"), "--out", out,
                                                  "--backbone", "resnet18"]))
    with pytest.raises(UserError, match="has 16 classes, not 19"):
        import_checkpoint.main(parser.parse_args([src, "--out", out, "--classes", "19", "--backbone", "resnet18"]))


def test_pretrained_official_init_file(tmp_path, capsys):
    torch.manual_seed(0)
    donor = DadaNet("resnet18", num_classes=16, depth_block=False)
    donor.load_state_dict(_randomised(donor, seed=3))
    # The ImageNet init file: "Scale." prefix, a classifier layer5 of another class count, no head.
    state = {"Scale." + k: v for k, v in to_official_state(donor.state_dict()).items()
             if not k.startswith("layer6") and not k.endswith("num_batches_tracked")}
    state["Scale.layer5.conv2d_list.0.weight"] = torch.zeros(21, 512, 3, 3)
    path = tmp_path / "DeepLab_resnet_pretrained_imagenet.pth"
    torch.save(state, path)
    net = DadaNet("resnet18", num_classes=7, depth_block=True, pretrained=str(path), caffe_input=True)
    assert "skipped 1 classifier keys layer5" in capsys.readouterr().out
    for k, v in donor.backbone.state_dict().items():
        if not k.endswith("num_batches_tracked"):
            assert torch.equal(net.backbone.state_dict()[k], v), k
    del state["Scale.layer4.1.conv2.weight"]
    torch.save(state, path)
    with pytest.raises(UserError, match="missing keys: layer4.1.conv2.weight"):
        DadaNet("resnet18", num_classes=7, pretrained=str(path), caffe_input=True)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read it as a tensor state dict") as err:
        DadaNet("resnet18", pretrained=str(bad), caffe_input=True)
    assert "\n" not in str(err.value)
    with pytest.warns(UserWarning, match="caffe_input=True"), pytest.raises(UserError):
        DadaNet("resnet18", pretrained=str(path))


def test_pretrained_imagenet_loads_torchvision_layout(monkeypatch):
    import torchvision
    tv = torchvision.models.resnet50(weights=None).state_dict()
    monkeypatch.setattr(dada_mod, "_imagenet_state_dict", lambda name: tv)
    with pytest.warns(UserWarning, match="strides layer2.0 in its 3x3 conv2"):
        net = DadaNet("resnet50", pretrained="imagenet")
    assert torch.equal(net.backbone.layer2[0].conv1.weight, tv["layer2.0.conv1.weight"])
    assert net.backbone.layer2[0].conv1.stride == (2, 2)                        # still caffe-style


def test_depth_without_feature_fusion():
    net = DadaNet("resnet18", num_classes=4, feat_fusion=False).eval()
    assert net.depth.dec is None and not any(k.startswith("depth.dec") for k in net.state_dict())
    assert len(net.param_groups(1.0)[1]["params"]) == 8 + 6                  # classifier + enc1..3
    x = torch.randn(1, 3, 48, 64)
    with torch.no_grad():
        logits, depth = net.forward_raw(x)
        feat = net.backbone(x)
        torch.testing.assert_close(logits, net.classifier(feat))
        torch.testing.assert_close(depth, net.depth.encode(feat).mean(dim=1))


def test_registered_and_rebuilt_from_spec():
    assert MODELS["dada"] is DadaNet
    spec = model_spec("dada", backbone="resnet18", num_classes=4, depth_block=False, pretrained="none")
    net = build_model(spec)
    assert isinstance(net, DadaNet) and net.num_classes == 4 and net.depth_block is False and net.depth is None


# ----------------------------------------------------------------------------- official optimizer
def _advent_1x_params(net):
    """The backbone group as ADVENT's get_1x_lr_params_no_scale yields it (advent/model/
    deeplabv2.py), duplicates and all: modules() of conv1, bn1, layer1..4, then each one's
    parameters()."""
    b = net.backbone
    for root in (b.conv1, b.bn1, b.layer1, b.layer2, b.layer3, b.layer4):
        for module in root.modules():
            for p in module.parameters():
                if p.requires_grad:
                    yield p


def test_official_repeats_resnet101_by_hand():
    """conv1 once, each of the 33 blocks' three convs 3x, the 4 downsample convs 4x: 314
    entries for 104 tensors, about 3x the nominal rate weighted by size."""
    net = _meta(backbone="resnet101", num_classes=16)
    counts = net.official_repeats()
    b = net.backbone
    assert counts[b.conv1.weight] == 1
    assert counts[b.layer1[0].conv1.weight] == counts[b.layer3[22].conv2.weight] == 3
    assert all(counts[getattr(b, f"layer{i}")[0].downsample[0].weight] == 4 for i in range(1, 5))
    assert (len(counts), sum(counts.values())) == (1 + 33 * 3 + 4, 314)
    assert sum(counts.values()) == len(list(_advent_1x_params(net)))
    total = sum(p.numel() for p in counts)
    weighted = sum(k * p.numel() for p, k in counts.items()) / total
    assert 3.0 < weighted < 3.1
    groups = net.param_groups(2.5e-4, official_repeats=True)
    assert [counts[p] for p in groups[0]["params"]] == groups[0]["repeats"] and "repeats" not in groups[1]


class _SGD12(torch.optim.Optimizer):
    """PyTorch 1.2's SGD.step (momentum, weight decay, no dampening), as pytorch/pytorch#12218
    quotes it: the decay is added into p.grad in place, the buffer lives in self.state[p]. Run
    over a group that lists a tensor k times, it updates it k times in a row."""

    def __init__(self, params, lr, momentum, weight_decay):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d_p = p.grad
                d_p.add_(p, alpha=group["weight_decay"])
                state = self.state[p]
                if "momentum_buffer" not in state:
                    buf = state["momentum_buffer"] = torch.clone(d_p).detach()
                else:
                    buf = state["momentum_buffer"]
                    buf.mul_(group["momentum"]).add_(d_p)
                p.add_(buf, alpha=-group["lr"])


def _official_group(net, lr):
    """optim_parameters as the official code builds it: the 1x group with its duplicates, the
    10x head (classifier + depth block, DADA's get_10x_lr_params)."""
    head = [p for m in net.head_modules() for p in m.parameters()]
    return [{"params": list(_advent_1x_params(net)), "lr": lr}, {"params": head, "lr": 10 * lr}]


def _train(net, opt, steps=4, seed=0, start=0):
    """`steps` SGD steps of CE + mean inverse depth on one fixed batch, under poly decay, from
    step `start` of the schedule (a resumed run's)."""
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(2, 3, 32, 48, generator=g), torch.randint(0, 3, (2, 32, 48), generator=g)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: (1 - it / 10) ** 0.9)
    if start:
        sched.last_epoch = start
        for group, base in zip(opt.param_groups, sched.base_lrs):
            group["lr"] = base * (1 - start / 10) ** 0.9
    net.train()
    for _ in range(steps):
        opt.zero_grad()
        logits, depth = net.forward_raw(x)
        logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=True)
        (F.cross_entropy(logits, y) + depth.mean()).backward()
        opt.step()
        sched.step()
    return [p.detach().clone() for p in net.parameters()]


def _tiny_pair():
    import copy
    torch.manual_seed(0)
    net = DadaNet("resnet-tiny", num_classes=3)
    return net, copy.deepcopy(net)


SGD_ARGS = dict(lr=0.05, momentum=0.9, weight_decay=0.05)   # large decay: the semantics show


@pytest.mark.filterwarnings("ignore:optimizer contains a parameter group with duplicate parameters")
def test_repeated_sgd_is_torch_sgd_over_the_official_group():
    """semantics="torch2" gives torch.optim.SGD(foreach=False)'s weights, bit for bit, after
    four steps over the official group (duplicates) of a small DADA net; plain SGD does not."""
    from lib.optim import RepeatedSGD
    a, b = _tiny_pair()
    official = _train(a, torch.optim.SGD(_official_group(a, SGD_ARGS["lr"]), foreach=False, **SGD_ARGS))
    ours = _train(b, RepeatedSGD(b.param_groups(SGD_ARGS["lr"], official_repeats=True), semantics="torch2",
                                 **SGD_ARGS))
    assert all(torch.equal(p, q) for p, q in zip(official, ours))
    c, _ = _tiny_pair()
    once = _train(c, torch.optim.SGD(c.param_groups(SGD_ARGS["lr"]), **SGD_ARGS))
    assert not all(torch.equal(p, q) for p, q in zip(official, once))


@pytest.mark.filterwarnings("ignore:optimizer contains a parameter group with duplicate parameters")
def test_repeated_sgd_is_pytorch_1_2_sgd_over_the_official_group():
    """semantics="torch1.2" (the paper preset's) gives PyTorch 1.2's step over the duplicated
    group, bit for bit; it differs from PyTorch 2's (decay accumulated in .grad, one buffer)."""
    from lib.optim import RepeatedSGD
    a, b = _tiny_pair()
    official = _train(a, _SGD12(_official_group(a, SGD_ARGS["lr"]), **SGD_ARGS))
    ours = _train(b, RepeatedSGD(b.param_groups(SGD_ARGS["lr"], official_repeats=True), semantics="torch1.2",
                                 **SGD_ARGS))
    assert all(torch.equal(p, q) for p, q in zip(official, ours))
    c, _ = _tiny_pair()
    torch2 = _train(c, RepeatedSGD(c.param_groups(SGD_ARGS["lr"], official_repeats=True), semantics="torch2",
                                   **SGD_ARGS))
    assert not all(torch.equal(p, q) for p, q in zip(official, torch2))
    d, _ = _tiny_pair()   # with every count 1 both are plain SGD
    plain = _train(d, torch.optim.SGD(d.param_groups(SGD_ARGS["lr"]), **SGD_ARGS))
    e, _ = _tiny_pair()
    assert all(torch.equal(p, q) for p, q in zip(plain, _train(e, RepeatedSGD(e.param_groups(SGD_ARGS["lr"]),
                                                                              **SGD_ARGS))))


def test_repeated_sgd_resumes_exactly():
    """state_dict / load_state_dict carry the counts and the shared buffers: 2 + 2 steps = 4."""
    from lib.optim import RepeatedSGD
    a, b = _tiny_pair()
    whole = _train(a, RepeatedSGD(a.param_groups(0.05, official_repeats=True), **SGD_ARGS), steps=4)
    opt = RepeatedSGD(b.param_groups(0.05, official_repeats=True), **SGD_ARGS)
    _train(b, opt, steps=2)
    fresh = RepeatedSGD(b.param_groups(0.05), **SGD_ARGS)          # counts 1 until loaded
    fresh.load_state_dict(opt.state_dict())
    assert fresh.param_groups[0]["repeats"] == opt.param_groups[0]["repeats"] and 4 in fresh.param_groups[0]["repeats"]
    resumed = _train(b, fresh, steps=2, start=2)
    torch.testing.assert_close(resumed, whole, rtol=0, atol=0)
    with pytest.raises(ValueError, match="one count >= 1 per parameter"):
        RepeatedSGD([{"params": [torch.nn.Parameter(torch.ones(1))], "repeats": [0]}], lr=0.1)


# ----------------------------------------------------------------------------- official test upsampling
def test_scoring_upsamples_dada_logits_once_to_the_label_size():
    """ADVENT eval_UDA.py: logits -> label size in one bilinear upsampling (align_corners=True),
    not to the input (align_corners=True) and then to the label (align_corners=False)."""
    from lib.evaluation import evaluate_model, label_size
    from lib.metrics import ConfusionMatrix
    net = DadaNet("resnet-tiny", num_classes=4).eval()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(1, 3, 40, 56, generator=g), torch.randint(0, 4, (1, 75, 101), generator=g)
    logits = torch.randn(1, 4, 6, 8, generator=g)      # stride-8 logits with spatial structure
    net.forward_raw = lambda image: (logits, None)
    with torch.no_grad():
        once = F.interpolate(logits, size=(75, 101), mode="bilinear", align_corners=True)
        twice = F.interpolate(F.interpolate(logits, size=(40, 56), mode="bilinear", align_corners=True),
                              size=(75, 101), mode="bilinear", align_corners=False)
        assert net(x)["semantic"].shape[-2:] == (40, 56) and label_size() is None   # outside scoring
    assert (once - twice).abs().max() > 1e-3                      # the two protocols differ here
    seen = []
    cm = ConfusionMatrix(4)
    cm.update(once.argmax(1), y)
    got = evaluate_model(net, [{"image": x, "semantic": y}], "cpu", ["semantic"], 4, progress=False,
                         on_batch=lambda batch, preds: seen.append(preds["semantic"]))
    assert torch.equal(seen[0], once)
    assert got["mIoU"] == cm.compute()["mIoU"] and got["per_class"] == cm.compute()["per_class"]


def test_scoring_leaves_other_models_to_the_scorer():
    """A model that does not read label_size (every other method) is scored as before: its
    output resized by the Scorer (bilinear, align_corners=False)."""
    from lib.evaluation import evaluate_model, resize_prediction
    from lib.metrics import ConfusionMatrix
    g = torch.Generator().manual_seed(2)
    fixed = torch.randn(1, 3, 10, 14, generator=g)

    class Fixed(nn.Module):
        def forward(self, x):
            return {"semantic": fixed.clone()}
    y = torch.randint(0, 3, (1, 33, 47), generator=g)
    cm = ConfusionMatrix(3)
    cm.update(resize_prediction("semantic", fixed, (33, 47)).argmax(1), y)
    got = evaluate_model(Fixed(), [{"image": torch.zeros(1, 3, 10, 14), "semantic": y}], "cpu",
                         ["semantic"], 3, progress=False)
    assert got["per_class"] == cm.compute()["per_class"]
