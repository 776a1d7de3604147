"""Tests for lib/models: backbones (strides, dilation, weight loading), decoders, EncDecNet, registry.

Shapes are checked on the meta device where only shapes matter (ResNet-50/101 in
milliseconds); numerics use ResNet-18 on 64x128 inputs on the CPU.
"""

import pytest
import torch
import torchvision

from lib.engine import UserError

from lib.models import MODELS, EncDecNet, build_backbone, build_model, freeze_bn, model_spec
from lib.models.decoders import UpsampleDecoder, to_depth, to_edges, to_normals, to_prediction

H, W = 64, 128
CHANNELS = {
    "resnet18": (64, 128, 256, 512),
    "resnet34": (64, 128, 256, 512),
    "resnet50": (256, 512, 1024, 2048),
    "resnet101": (256, 512, 1024, 2048),
}
# Stage strides worked out by hand: each stage past the output stride dilates instead.
STRIDES = {8: (4, 8, 8, 8), 16: (4, 8, 16, 16), 32: (4, 8, 16, 32)}


@pytest.mark.parametrize("name", sorted(CHANNELS))
@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_backbone_shapes_strides_channels(name, output_stride):
    with torch.device("meta"):
        backbone = build_backbone(name, output_stride)
        feats = backbone(torch.empty(2, 3, H, W))
    stages = ("layer1", "layer2", "layer3", "layer4")
    assert list(feats) == list(stages)
    for stage, channels, stride in zip(stages, CHANNELS[name], STRIDES[output_stride]):
        assert tuple(feats[stage].shape) == (2, channels, H // stride, W // stride)
        assert backbone.channels[stage] == channels
        assert backbone.strides[stage] == stride
    assert not hasattr(backbone, "fc") and not hasattr(backbone, "avgpool")


@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_resnet18_cpu_forward_shapes(output_stride):
    backbone = build_backbone("resnet18", output_stride).eval()
    with torch.no_grad():
        feat = backbone(torch.randn(1, 3, H, W))["layer4"]
    assert feat.shape == (1, 512, H // output_stride, W // output_stride)
    assert torch.isfinite(feat).all()


def test_resnet18_dilation_applied():
    os8 = build_backbone("resnet18", 8)
    # The conv that used to stride keeps the previous dilation; later convs get the new one.
    assert os8.layer3[0].conv1.stride == (1, 1) and os8.layer3[0].downsample[0].stride == (1, 1)
    assert os8.layer3[0].conv1.dilation == (1, 1) and os8.layer3[1].conv2.dilation == (2, 2)
    assert os8.layer4[0].conv1.dilation == (2, 2)
    assert os8.layer4[0].conv2.dilation == (4, 4) and os8.layer4[1].conv1.dilation == (4, 4)
    assert os8.layer4[1].conv2.padding == (4, 4)
    os16 = build_backbone("resnet18", 16)
    assert os16.layer3[1].conv2.dilation == (1, 1)
    assert os16.layer4[1].conv2.dilation == (2, 2) and os16.layer4[0].conv1.stride == (1, 1)


def test_multi_grid():
    backbone = build_backbone("resnet18", 16, multi_grid=[1, 2])
    assert backbone.layer4[0].conv2.dilation == (2, 2) and backbone.layer4[1].conv2.dilation == (4, 4)
    with pytest.raises(ValueError, match="multi_grid"):
        build_backbone("resnet18", 16, multi_grid=[1, 2, 4])


def test_unknown_backbone_and_stride():
    with pytest.raises(ValueError, match="resnet50"):
        build_backbone("vgg16")
    with pytest.raises(ValueError, match="output_stride"):
        build_backbone("resnet18", 4)


def _assert_same_weights(backbone, state_dict):
    own = backbone.state_dict()
    for key, value in state_dict.items():
        if not key.startswith("fc."):
            assert torch.equal(own[key], value), key


def test_pretrained_path_round_trip(tmp_path):
    reference = torchvision.models.resnet18(weights=None).state_dict()  # includes fc.*
    path = tmp_path / "r18.pth"
    torch.save(reference, path)
    _assert_same_weights(build_backbone("resnet18", 8, pretrained=str(path)), reference)
    # Wrapped under "state_dict" with DDP's "module." prefix loads the same.
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in reference.items()}, "epoch": 3}, wrapped)
    _assert_same_weights(build_backbone("resnet18", 16, pretrained=str(wrapped)), reference)


def test_pretrained_wrong_keys(tmp_path):
    state = torchvision.models.resnet18(weights=None).state_dict()
    state["head.weight"] = state.pop("conv1.weight")
    path = tmp_path / "bad.pth"
    torch.save({"model": state}, path)
    with pytest.raises(UserError, match=r"missing keys: conv1\.weight.*unexpected keys: head\.weight"):
        build_backbone("resnet18", pretrained=str(path))
    # A ResNet-34 checkpoint does not fit a ResNet-18 (extra blocks).
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), path)
    with pytest.raises(UserError, match="unexpected keys: layer1.2"):
        build_backbone("resnet18", pretrained=str(path))
    # Not a tensor file at all: one line, not torch's unpickling advice.
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read it as a tensor checkpoint") as err:
        build_backbone("resnet18", pretrained=str(path))
    assert "\n" not in str(err.value)


def test_pretrained_missing_file(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="--pretrained") as info:
        build_backbone("resnet18", pretrained=str(missing))
    assert str(missing) in str(info.value)


def test_imagenet_offline_error(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError, match=r"cannot download ImageNet weights for resnet50 \(.*no network\)") as info:
        build_backbone("resnet50", pretrained="imagenet")
    assert "--pretrained PATH" in str(info.value) and "--pretrained none" in str(info.value)


def test_imagenet_uses_weights_api(monkeypatch):
    reference = torchvision.models.resnet18(weights=None).state_dict()
    urls = []

    def fake_download(url, *args, **kwargs):
        urls.append(url)
        return reference

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", fake_download)
    _assert_same_weights(build_backbone("resnet18", 16, pretrained="imagenet"), reference)
    assert urls == [torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url]


def test_freeze_bn_keeps_running_stats():
    backbone = build_backbone("resnet18", 16).train()
    freeze_bn(backbone)
    backbone.train()  # a script's usual model.train() must not undo the freeze
    before = {k: v.clone() for k, v in backbone.state_dict().items() if "running" in k}
    backbone(torch.randn(2, 3, H, W) * 3 + 1)["layer4"].mean().backward()
    after = backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert backbone.bn1.weight.grad is None and not backbone.bn1.weight.requires_grad
    assert backbone.conv1.weight.grad is not None  # only BN is frozen


@pytest.mark.parametrize("size", [(H, W), (50, 70)])
def test_decoder_reaches_input_size(size):
    decoder = UpsampleDecoder(512, 5, num_up=4, width=64)
    feat = torch.randn(2, 512, H // 16, W // 16)
    assert decoder(feat).shape == (2, 5, H, W)
    assert decoder(feat, out_size=size).shape == (2, 5, *size)
    assert decoder.features(feat).shape == (2, 32, H, W)  # widths 64, 32, 32 (min_width), 32
    assert decoder.head.out_channels == 5


def test_task_activations():
    raw = torch.randn(2, 3, 4, 5) * 50
    assert (to_depth(raw[:, :1]) > 0).all() and to_depth(raw[:, :1]).shape == (2, 4, 5)
    assert torch.allclose(to_normals(raw).norm(dim=1), torch.ones(2, 4, 5), atol=1e-5)
    edges = to_edges(raw[:, :1])
    assert edges.shape == (2, 4, 5) and edges.min() >= 0 and edges.max() <= 1
    assert torch.equal(to_prediction("semantic", raw), raw)
    with pytest.raises(ValueError, match="unknown task"):
        to_prediction("optical_flow", raw)


def test_encdec_outputs():
    tasks = {"semantic": 11, "depth": 1, "normals": 3, "edges": 1}
    model = EncDecNet("resnet18", output_stride=16, tasks=tasks, decoder_width=64).eval()
    x = torch.randn(2, 3, H, W)
    with torch.no_grad():
        out = model(x)
        feat = model.forward_features(x)
    assert feat.shape == (2, 512, H // 16, W // 16)
    assert set(out) == set(tasks)
    assert out["semantic"].shape == (2, 11, H, W)
    assert out["depth"].shape == (2, H, W) and (out["depth"] > 0).all()
    assert out["normals"].shape == (2, 3, H, W)
    assert torch.allclose(out["normals"].norm(dim=1), torch.ones(2, H, W), atol=1e-5)
    assert out["edges"].shape == (2, H, W) and out["edges"].min() >= 0 and out["edges"].max() <= 1


def test_encdec_rejects_bad_tasks():
    with pytest.raises(ValueError, match="unknown task"):
        EncDecNet(tasks={"flow": 2})
    with pytest.raises(ValueError, match="depth"):
        EncDecNet(tasks={"depth": 3})


def test_build_model_round_trip():
    spec = model_spec("encdec", backbone="resnet18", output_stride=8, tasks={"depth": 1}, decoder_width=32)
    assert spec == {"arch": "encdec", "kwargs": {"backbone": "resnet18", "output_stride": 8,
                                                  "tasks": {"depth": 1}, "decoder_width": 32}}
    torch.manual_seed(0)
    model = build_model(spec)
    assert isinstance(model, MODELS["encdec"]) and model.backbone.strides["layer4"] == 8
    rebuilt = build_model(spec)
    rebuilt.load_state_dict(model.state_dict())  # same spec -> same architecture, strict keys


def test_build_model_unknown_arch():
    with pytest.raises(ValueError, match=r"unknown model arch 'nope'; known: .*encdec"):
        build_model({"arch": "nope", "kwargs": {}})
    with pytest.raises(ValueError, match="JSON"):
        model_spec("encdec", tasks={"semantic": object()})
