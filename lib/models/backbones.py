"""Dilated torchvision ResNet encoders shared by every method.

`build_backbone("resnet50", output_stride=16)` returns a `ResNetBackbone` whose forward
gives the four residual stages as a dict. Output stride 16 or 8 is reached by dilation,
as in AT/DT (dilated ResNet-50, stride 16) and DeepLab-v2 / DADA (ResNet-101, stride 8).

Weights come from one of three places (`--pretrained` flag of every script):
"none" (random init), "imagenet" (torchvision's weights API, needs the download cache
or internet) or a path to a local torchvision-style ResNet state dict. Loading never
drops keys silently: any missing, unexpected or mis-shaped key is an error.
"""

import os

import torch
import torch.nn as nn
import torchvision

from lib.engine import UserError

STAGES = ("layer1", "layer2", "layer3", "layer4")

# name -> (torchvision constructor, weights enum member used for "imagenet").
# V2 weights for the Bottleneck nets (better ImageNet accuracy); 18/34 only have V1.
_RESNETS = {
    "resnet18": (torchvision.models.resnet18, "ResNet18_Weights", "IMAGENET1K_V1"),
    "resnet34": (torchvision.models.resnet34, "ResNet34_Weights", "IMAGENET1K_V1"),
    "resnet50": (torchvision.models.resnet50, "ResNet50_Weights", "IMAGENET1K_V2"),
    "resnet101": (torchvision.models.resnet101, "ResNet101_Weights", "IMAGENET1K_V2"),
}


def _stage_dilations(output_stride):
    """Dilation of layer1..layer4 that gives `output_stride` (each stride-2 stage past it dilates x2)."""
    if output_stride not in (8, 16, 32):
        raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride} (flag --output-stride)")
    dilations, stride, dilation = [], 4, 1
    for i in range(4):
        if i > 0:  # layer2..layer4 each halve the resolution unless dilated
            if stride < output_stride:
                stride *= 2
            else:
                dilation *= 2
        dilations.append(dilation)
    return dilations


def _set_conv_dilation(conv, dilation):
    """Dilate a 3x3 conv in place; padding = dilation keeps the spatial size."""
    conv.dilation = (dilation, dilation)
    conv.padding = (dilation, dilation)


def _dilate_basic_layer(layer, dilation, previous_dilation):
    """Replace the stride of a BasicBlock stage by dilation (torchvision refuses this itself).

    Mirrors torchvision's Bottleneck rule: the conv that used to stride still sees the
    previous resolution's grid (previous dilation); every later 3x3 conv gets `dilation`.
    """
    first = layer[0]
    first.conv1.stride = (1, 1)
    first.stride = 1
    if first.downsample is not None:
        first.downsample[0].stride = (1, 1)
    _set_conv_dilation(first.conv1, previous_dilation)
    _set_conv_dilation(first.conv2, dilation)
    for block in list(layer)[1:]:
        _set_conv_dilation(block.conv1, dilation)
        _set_conv_dilation(block.conv2, dilation)


def _apply_multi_grid(layer, base_dilation, multi_grid):
    """DeepLab-v3 multi-grid: 3x3 convs of block i in layer4 use base_dilation * multi_grid[i]."""
    if len(multi_grid) != len(layer):
        raise ValueError(f"multi_grid needs one rate per layer4 block ({len(layer)}), got {list(multi_grid)}")
    for block, rate in zip(layer, multi_grid):
        for m in block.modules():
            if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3):
                _set_conv_dilation(m, base_dilation * int(rate))


TINY = "resnet-tiny"
TINY_WIDTH = 16


def _make_tiny_resnet():
    """`resnet-tiny` (--smoke and tests only, no ImageNet weights): ResNet-18's layout with one
    torchvision BasicBlock per stage at widths 16-128, ~0.3M parameters instead of 11.7M."""
    from torchvision.models.resnet import BasicBlock
    net, inplanes = nn.Module(), TINY_WIDTH
    net.conv1 = nn.Conv2d(3, inplanes, 7, stride=2, padding=3, bias=False)
    net.bn1, net.relu, net.maxpool = nn.BatchNorm2d(inplanes), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)
    for i, stage in enumerate(STAGES):
        planes, stride = TINY_WIDTH * 2**i, 1 if i == 0 else 2
        down = None if stride == 1 else nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False),
                                                       nn.BatchNorm2d(planes))
        setattr(net, stage, nn.Sequential(BasicBlock(inplanes, planes, stride, down)))
        inplanes = planes
    for m in net.modules():   # torchvision's ResNet initialisation
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return net


def _make_torchvision_resnet(name, dilations):
    """Build a randomly initialised torchvision ResNet with the given stage dilations."""
    if name not in _RESNETS and name != TINY:
        raise ValueError(f"unknown backbone '{name}'; known: {', '.join([*_RESNETS, TINY])} (flag --backbone)")
    if name == TINY:
        net = _make_tiny_resnet()
        for i in (1, 2, 3):
            if dilations[i] > 1:
                _dilate_basic_layer(getattr(net, STAGES[i]), dilations[i], dilations[i - 1])
        return net
    ctor = _RESNETS[name][0]
    bottleneck = name in ("resnet50", "resnet101")
    if bottleneck:
        # torchvision handles dilation itself for Bottleneck nets.
        return ctor(weights=None, replace_stride_with_dilation=[d > 1 for d in dilations[1:]])
    net = ctor(weights=None)
    for i in (1, 2, 3):
        if dilations[i] > 1:
            _dilate_basic_layer(getattr(net, STAGES[i]), dilations[i], dilations[i - 1])
    return net


class ResNetBackbone(nn.Module):
    """ResNet without avgpool/fc; forward returns {"layer1": ..., "layer4": ...}.

    State-dict keys equal torchvision's ("conv1.weight", "layer1.0.bn1.weight", ...), so
    torchvision checkpoints load directly. `channels` and `strides` describe each stage.
    """

    def __init__(self, name="resnet50", output_stride=16, multi_grid=None):
        super().__init__()
        dilations = _stage_dilations(output_stride)
        net = _make_torchvision_resnet(name, dilations)
        if multi_grid is not None:
            _apply_multi_grid(net.layer4, dilations[3], multi_grid)
        self.name, self.output_stride = name, output_stride
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        base = (TINY_WIDTH if name == TINY else 64) * (4 if name in ("resnet50", "resnet101") else 1)
        self.channels = {s: base * 2**i for i, s in enumerate(STAGES)}
        self.strides = {s: 4 * 2**i // d for i, (s, d) in enumerate(zip(STAGES, dilations))}

    def forward(self, x):
        """(B, 3, H, W) -> dict of stage features, layer_k at H / strides[layer_k]."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, 64, H/4, W/4)
        feats = {}
        for stage in STAGES:
            x = getattr(self, stage)(x)
            feats[stage] = x
        return feats


def _strip_prefix(state_dict, prefix="module."):
    """Drop DataParallel / DDP prefixes (possibly nested) from every key."""
    out = {}
    for key, value in state_dict.items():
        while key.startswith(prefix):
            key = key[len(prefix):]
        out[key] = value
    return out


def _unwrap_checkpoint(obj, source):
    """Find the ResNet state dict inside a checkpoint: top level, or under "state_dict" / "model"."""
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(torch.is_tensor(v) for v in obj.values()):
        raise UserError(f"{source}: expected a ResNet state dict (or one under 'state_dict' / 'model')")
    return obj


def _few(keys, n=5):
    keys = sorted(keys)
    more = f" ... (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def load_backbone_state(backbone, state_dict, source):
    """Load a torchvision ResNet state dict into `backbone`; "fc.*" is ignored, nothing else is.

    Raises UserError (one line) naming a few missing / unexpected / mis-shaped keys.
    """
    state_dict = {k: v for k, v in _strip_prefix(state_dict).items() if not k.startswith("fc.")}
    own = backbone.state_dict()
    # Old checkpoints predate BN's num_batches_tracked; BN itself fills it in on load.
    missing = {k for k in own if k not in state_dict and not k.endswith("num_batches_tracked")}
    unexpected = set(state_dict) - set(own)
    problems = []
    if missing:
        problems.append(f"missing keys: {_few(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_few(unexpected)}")
    shapes = {k for k in set(state_dict) & set(own) if state_dict[k].shape != own[k].shape}
    if shapes:
        problems.append(f"shape mismatch: {_few(shapes)}")
    if problems:
        raise UserError(f"{source} does not fit backbone {backbone.name}: " + "; ".join(problems))
    result = backbone.load_state_dict(state_dict, strict=False)
    assert not result.unexpected_keys and all(k.endswith("num_batches_tracked") for k in result.missing_keys)


def _imagenet_state_dict(name):
    """Fetch torchvision's ImageNet weights (from the torch hub cache when present)."""
    _, enum_name, member = _RESNETS[name]
    weights = getattr(torchvision.models, enum_name)[member]
    try:
        return weights.get_state_dict(progress=True, check_hash=True)
    except Exception as err:  # network, proxy, hash or disk errors all mean the same to the user
        first = (str(err).strip().splitlines() or [""])[0]
        raise UserError(
            f"cannot download ImageNet weights for {name} ({type(err).__name__}: {first[:200]}); "
            "pass a local file with --pretrained PATH or use --pretrained none"
        ) from None


def _file_state_dict(path):
    """Read a local checkpoint safely (weights_only) and return its ResNet state dict."""
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"--pretrained {path}: no such file; give an existing checkpoint, 'imagenet' or 'none'"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:   # torch's message runs to many lines: its first says what
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(f"--pretrained {path}: cannot read it as a tensor checkpoint "
                        f"({type(err).__name__}: {first[:200]})") from None
    return _unwrap_checkpoint(obj, f"--pretrained {path}")


def build_backbone(name="resnet50", output_stride=16, pretrained="none", multi_grid=None):
    """Dilated ResNet encoder (AT/DT Sec. 4 "Architecture": dilated ResNet-50, output stride 16).

    pretrained: "none" (random), "imagenet" (torchvision weights) or a checkpoint path.
    """
    backbone = ResNetBackbone(name, output_stride, multi_grid)
    source = "none" if pretrained is None else str(pretrained)
    if source.lower() == "none":
        return backbone
    if source.lower() == "imagenet":
        if name == TINY:
            raise UserError(f"{TINY} has no ImageNet weights (it is for --smoke and tests): use --pretrained none")
        load_backbone_state(backbone, _imagenet_state_dict(name), f"ImageNet weights for {name}")
    else:
        load_backbone_state(backbone, _file_state_dict(source), f"--pretrained {source}")
    return backbone


def _keep_bn_frozen(module, _inputs):
    """Forward pre-hook: a later model.train() must not re-enable batch statistics."""
    module.training = False


def freeze_bn(module):
    """Put every BatchNorm in eval mode for good and stop its affine grads (DADA, AT/DT stage 2).

    The eval mode survives later `model.train()` calls (a forward pre-hook re-applies it),
    so scripts can keep calling `model.train()` at the start of each iteration. Returns
    `module` for chaining.
    """
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
            for p in m.parameters(recurse=False):
                p.requires_grad_(False)
            if not getattr(m, "_bn_frozen", False):
                m.register_forward_pre_hook(_keep_bn_frozen)
                m._bn_frozen = True
    return module
