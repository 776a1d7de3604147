"""DADA's segmentation network (Vu et al., ICCV 2019, Sec. 3.1) and the official-checkpoint mapping.

`DadaNet` = DeepLab-v2 (lib/models/deeplab.py) + the residual auxiliary depth block on
layer4, as valeoai/DADA's `dada/model/deeplabv2_depth.py` builds it:

    e = enc3(relu(enc2(relu(enc1(f)))))      enc1 1x1 C4->512, enc2 3x3 512->512, enc3 1x1 512->128
    inverse depth = mean_c e                 no activation (the official output)
    logits = ASPP-sum(f * relu(dec(e)))      dec 1x1 128->C4; "feature fusion" = element-wise product

`depth_block=False` is plain DeepLab-v2 (AdvEnt, source-only); `feat_fusion=False` keeps the
depth encoder but drops dec and the product (Table 3, S4). The widths 512 / 128 are the
official ones for every backbone (for resnet18, C4 = 512, enc1 is 512->512).

Inputs. The repository feeds RGB normalised with torchvision's ImageNet mean/std. The
official weights (ADVENT's `DeepLab_resnet_pretrained_imagenet.pth` and every DADA / AdvEnt
checkpoint) expect Caffe input: BGR in 0..255 minus (104.008, 116.669, 122.679). With
`caffe_input=True` forward converts the first into the second before conv1;
`tools/import_checkpoint.py` and the evaluate.py hook set it for official checkpoints.

Official names (ADVENT `ResNetMulti`, DADA `ResNetMultiDepth`) <-> ours:
    conv1 / bn1 / layer1..4 .*        backbone.<same>
    layer6.conv2d_list.<i>.*          classifier.convs.<i>.*
    enc4_1 / enc4_2 / enc4_3 / dec4   depth.enc1 / depth.enc2 / depth.enc3 / depth.dec
    layer5.*                          skipped: ADVENT's multi-level auxiliary classifier on
                                      layer3 (unused at test time, off in DADA), and in the
                                      ImageNet init file (keys "Scale.*") its ImageNet-model
                                      classifier, which the official train.py always drops.
"""

import os
import warnings
from argparse import Namespace

import torch
import torch.nn as nn
import torch.nn.functional as F

from lib.engine import UserError
from lib.evaluation import label_size

from .backbones import _imagenet_state_dict, _strip_prefix, load_backbone_state
from .deeplab import AsppSum, build_deeplab_backbone

CAFFE_MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)   # ADVENT / DADA config IMG_MEAN
IMAGENET_MEAN = (0.485, 0.456, 0.406)                          # lib/data/transforms.py
IMAGENET_STD = (0.229, 0.224, 0.225)
# our prefix -> official prefix, for everything outside the trunk
HEAD_NAMES = (("classifier.convs.", "layer6.conv2d_list."), ("depth.enc1.", "enc4_1."),
              ("depth.enc2.", "enc4_2."), ("depth.enc3.", "enc4_3."), ("depth.dec.", "dec4."))
SKIPPED = ("layer5.",)


def to_caffe_input(x):
    """Repository input (ImageNet-normalised RGB) -> official Caffe input (BGR, 0..255, minus IMG_MEAN)."""
    mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    bgr = (x * std + mean).flip(1) * 255.0
    return bgr - x.new_tensor(CAFFE_MEAN_BGR).view(1, 3, 1, 1)


class DepthBlock(nn.Module):
    """DADA Sec. 3.1 residual auxiliary block (official enc4_1..3, dec4): (fused features, inverse depth).

    fusion=False (Table 3's depth adaptation without "feature fusion", S4; not in the official
    code) has no decoder and passes the features through unchanged.
    """

    def __init__(self, channels, width=512, bottleneck=128, fusion=True):
        super().__init__()
        self.enc1 = nn.Conv2d(channels, width, 1)
        self.enc2 = nn.Conv2d(width, width, 3, padding=1)
        self.enc3 = nn.Conv2d(width, bottleneck, 1)
        self.dec = nn.Conv2d(bottleneck, channels, 1) if fusion else None
        for conv in filter(None, (self.enc1, self.enc2, self.enc3, self.dec)):
            nn.init.normal_(conv.weight, 0.0, 0.01)   # official: N(0, 0.01) weights, default biases

    def encode(self, feat):
        """The 128 depth maps (official x4_enc): three convs, ReLU after the first two."""
        return self.enc3(F.relu(self.enc2(F.relu(self.enc1(feat)))))

    def forward(self, feat):
        """feat (B, C4, h, w) -> (feat * relu(dec(e)), mean_c e of shape (B, h, w))."""
        enc = self.encode(feat)
        fused = feat if self.dec is None else feat * F.relu(self.dec(enc))
        return fused, enc.mean(dim=1)


class DadaNet(nn.Module):
    """DeepLab-v2 ResNet + optional DADA depth block (DADA Sec. 3.1; official deeplabv2_depth.py)."""

    def __init__(self, backbone="resnet101", num_classes=16, depth_block=True, freeze_bn_stats=False,
                 pretrained="none", caffe_input=False, feat_fusion=True):
        super().__init__()
        self.num_classes, self.depth_block = int(num_classes), bool(depth_block)
        self.feat_fusion = self.depth_block and bool(feat_fusion)
        self.backbone_name, self.caffe_input = backbone, bool(caffe_input)
        self.backbone = build_deeplab_backbone(backbone, freeze_bn_stats=freeze_bn_stats)
        channels = self.backbone.channels
        self.depth = DepthBlock(channels, fusion=self.feat_fusion) if self.depth_block else None
        self.classifier = AsppSum(channels, self.num_classes)
        load_pretrained(self, pretrained)

    def forward_raw(self, x):
        """x (B, 3, H, W) -> (logits (B, C, h, w) at output stride 8, inverse depth (B, h, w) or None)."""
        feat = self.backbone(to_caffe_input(x) if self.caffe_input else x)
        depth = None
        if self.depth is not None:
            feat, depth = self.depth(feat)
        return self.classifier(feat), depth

    def forward(self, x):
        """{"semantic": logits upsampled once (bilinear, align_corners=True)}: straight to the label
        size while scored (lib.evaluation.label_size; the official test, ADVENT eval_UDA.py), else
        to x's size."""
        logits, _ = self.forward_raw(x)
        size = label_size() or x.shape[-2:]
        return {"semantic": F.interpolate(logits, size=size, mode="bilinear", align_corners=True)}

    def head_modules(self):
        """The 10x-lr modules (official get_10x_lr_params): classifier and depth block."""
        return [self.classifier] + ([self.depth] if self.depth is not None else [])

    def official_repeats(self):
        """{parameter: how often ADVENT's get_1x_lr_params_no_scale yields it}: once per module on
        its path below conv1, bn1, layer1..4 (their modules(), then each one's parameters()), so
        conv1 1, a block's convs 3, a downsample conv 4 (lib/optim.py)."""
        counts, b = {}, self.backbone
        for root in (b.conv1, b.bn1, b.layer1, b.layer2, b.layer3, b.layer4):
            for module in root.modules():
                for p in module.parameters():
                    if p.requires_grad:
                        counts[p] = counts.get(p, 0) + 1
        return counts

    def param_groups(self, lr, official_repeats=False):
        """[backbone at lr, classifier + depth block at 10 lr] (official optim_parameters), trainable
        only, each tensor once; official_repeats: the backbone group also carries "repeats", the
        official multiplicity of each tensor (lib.optim.RepeatedSGD reads it)."""
        head = [p for m in self.head_modules() for p in m.parameters() if p.requires_grad]
        trunk = [p for p in self.backbone.parameters() if p.requires_grad]
        groups = [{"params": trunk, "lr": lr}, {"params": head, "lr": 10 * lr}]
        if official_repeats:
            counts = self.official_repeats()
            groups[0]["repeats"] = [counts[p] for p in trunk]
        return groups


# ----------------------------------------------------------------------------- official names
def ours_to_official(key):
    """Our state-dict key -> the official (ADVENT / DADA) one."""
    if key.startswith("backbone."):
        return key[len("backbone."):]
    for ours, official in HEAD_NAMES:
        if key.startswith(ours):
            return official + key[len(ours):]
    raise KeyError(f"no official name for {key!r}")


def official_to_ours(key):
    """Official key -> ours; None for the keys the official code itself never uses (layer5.*)."""
    if key.startswith(SKIPPED):
        return None
    for ours, official in HEAD_NAMES:
        if key.startswith(official):
            return ours + key[len(official):]
    if key.split(".")[0] in ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4"):
        return "backbone." + key
    raise KeyError(f"unknown official key {key!r}")


def to_official_state(state_dict):
    """Our state dict renamed to the official layout (for export and the round-trip test)."""
    return {ours_to_official(k): v for k, v in state_dict.items()}


def _few(keys, n=4):
    """A few sorted keys for a one-line message."""
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (f" ... (+{len(keys) - n} more)" if len(keys) > n else "")


def _rename(state_dict, source):
    """Official names -> ours; returns (renamed, unknown keys, skipped keys)."""
    renamed, unknown, skipped = {}, [], []
    for key, value in state_dict.items():
        try:
            ours = official_to_ours(key)
        except KeyError:
            unknown.append(key)
            continue
        if ours is None:
            skipped.append(key)
        else:
            renamed[ours] = value
    return renamed, unknown, skipped


def map_official_state(state_dict, net, source, whole=True):
    """Official state dict -> ours for `net`, strictly (one-line UserError naming the problem keys).

    whole=True (a trained checkpoint): every key of `net` must come from the file. whole=False
    (an init file): every backbone key must; classifier / depth keys are taken when present.
    BatchNorm's num_batches_tracked may be absent (files older than torch 0.4.1).
    """
    renamed, unknown, skipped = _rename(state_dict, source)
    own = net.state_dict()
    unknown += [k for k in renamed if k not in own]
    needed = [k for k in own if (whole or k.startswith("backbone.")) and not k.endswith("num_batches_tracked")]
    missing = [ours_to_official(k) for k in needed if k not in renamed]
    shapes = [k for k in renamed if k in own and renamed[k].shape != own[k].shape]
    problems = []
    if missing:
        problems.append(f"missing keys: {_few(missing)}")
    if unknown:
        problems.append(f"unexpected keys: {_few(unknown)}")
    if shapes:
        problems.append("shape mismatch: " + _few(f"{ours_to_official(k)} {tuple(renamed[k].shape)} "
                                                  f"vs {tuple(own[k].shape)}" for k in shapes))
    if problems:
        raise UserError(f"{source} does not fit DeepLab-v2 {net.backbone_name} with {net.num_classes} "
                        f"classes, depth block {'on' if net.depth_block else 'off'}: " + "; ".join(problems))
    return {k: v for k, v in renamed.items() if k in own}, skipped


def load_official_state(net, state_dict, source, whole=True):
    """Map and load an official state dict into `net`; returns the skipped official keys."""
    mapped, skipped = map_official_state(state_dict, net, source, whole)
    result = net.load_state_dict(mapped, strict=False)
    assert not result.unexpected_keys
    assert all(whole is False or k.endswith("num_batches_tracked") for k in result.missing_keys)
    return skipped


def _plain_state(obj):
    """A {name: tensor} dict (top level or under "state_dict"), prefixes "module." / "Scale." removed; else None."""
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(torch.is_tensor(v) for v in obj.values()):
        return None
    state = _strip_prefix(obj)
    if all(k.startswith("Scale.") for k in state):   # the ImageNet init file (MS-DeepLab naming)
        state = {k[len("Scale."):]: v for k, v in state.items()}
    return state


def read_official_state(path, flag="--pretrained"):
    """Read an official .pth (weights_only) as a plain state dict with official names; UserError if not one."""
    if not os.path.isfile(path):
        raise UserError(f"{flag} {path}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:   # pickled objects, truncated files: one line, not a trace
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(f"{flag} {path}: cannot read it as a tensor state dict "
                        f"({type(err).__name__}: {first[:160]})") from None
    state = _plain_state(obj)
    if state is None or "conv1.weight" not in state:
        raise UserError(f"{flag} {path}: not an official DeepLab-v2 / DADA state dict "
                        "(expected tensors named conv1.weight, layer1.0.conv1.weight, ...)")
    return state


# ----------------------------------------------------------------------------- pretrained
def _load_imagenet(net):
    """torchvision ImageNet weights into the caffe-style trunk (same names and shapes; see warning)."""
    if net.backbone_name != "resnet18":
        warnings.warn(
            f"--pretrained imagenet: torchvision's {net.backbone_name} strides layer2.0 in its 3x3 conv2 "
            "(ResNet v1.5); the official DeepLab-v2 strides it in the 1x1 conv1. The tensors load (same "
            "shapes) but layer2.0 samples differently. The paper's init is the official "
            "DeepLab_resnet_pretrained_imagenet.pth (with caffe_input=True).", stacklevel=3)
    load_backbone_state(net.backbone, _imagenet_state_dict(net.backbone_name),
                        f"ImageNet weights for {net.backbone_name}")


def load_pretrained(net, pretrained):
    """--pretrained: "none", "imagenet" (torchvision) or PATH to an official DeepLab-v2 / DADA .pth."""
    source = "none" if pretrained is None else str(pretrained)
    if source.lower() == "none":
        return
    if source.lower() == "imagenet":
        return _load_imagenet(net)
    if not net.caffe_input:
        warnings.warn(f"--pretrained {source}: official weights expect Caffe input (BGR, 0..255, "
                      "mean-subtracted); build DadaNet with caffe_input=True to feed them that", stacklevel=3)
    skipped = load_official_state(net, read_official_state(source), f"--pretrained {source}", whole=False)
    if skipped:
        print(f"pretrained {source}: skipped {len(skipped)} classifier keys layer5.* "
              "(as the official train.py does); the classifier starts from N(0, 0.01)")


# ----------------------------------------------------------------------------- import
def _count_blocks(state, stage):
    """Number of residual blocks of `stage` in an official state dict."""
    ids = {int(k.split(".")[1]) for k in state if k.startswith(stage + ".")}
    return max(ids) + 1 if ids else 0


def infer_official_spec(state, source):
    """(backbone, num_classes, depth_block) of an official trained state dict, from its keys and shapes."""
    if "layer6.conv2d_list.0.weight" not in state:
        raise UserError(f"{source}: no classifier layer6.conv2d_list.* (the ImageNet init file is "
                        "not a trained model; pass a DADA / AdvEnt checkpoint)")
    bottleneck = "layer1.0.conv3.weight" in state
    blocks = (_count_blocks(state, "layer3"), bottleneck)
    names = {(23, True): "resnet101", (6, True): "resnet50", (2, False): "resnet18"}
    if blocks not in names:
        raise UserError(f"{source}: {blocks[0]} layer3 blocks ({'Bottleneck' if bottleneck else 'BasicBlock'}) "
                        "match no known DeepLab-v2 backbone (resnet101, resnet50, resnet18)")
    return names[blocks], int(state["layer6.conv2d_list.0.weight"].shape[0]), "enc4_1.weight" in state


def official_to_net(state, source, classes=None, depth=None, backbone=None):
    """Build DadaNet (caffe_input=True) from an official trained state dict; (net, spec kwargs)."""
    found_backbone, found_classes, found_depth = infer_official_spec(state, source)
    if classes is not None and classes != found_classes:
        raise UserError(f"{source} has {found_classes} classes, not {classes} (check --classes)")
    if depth is not None and depth != found_depth:
        raise UserError(f"{source} has DADA's depth block (enc4_*, dec4): drop --no-depth" if found_depth else
                        f"{source} has no depth block (plain DeepLab-v2: AdvEnt / source-only): pass --no-depth")
    if backbone is not None and backbone != found_backbone:
        raise UserError(f"{source} is a DeepLab-v2 {found_backbone}, not {backbone} (check --backbone)")
    kwargs = {"backbone": found_backbone, "num_classes": found_classes, "depth_block": found_depth,
              "freeze_bn_stats": False, "pretrained": "none", "caffe_input": True}
    net = DadaNet(**kwargs)
    load_official_state(net, state, source, whole=True)
    return net, kwargs


def import_args(path, classes):
    """The args an imported checkpoint records: scored on Cityscapes as the official test does
    (ADVENT eval_UDA.py): the 1024x512 input (PIL bicubic, ADVENT dataset/base_dataset.py), the
    labels at their own 2048x1024, one at a time."""
    scoring = [{"dataset": "cityscapes", "role": "--tgt", "split": "val", "size": [512, 1024],
                "batch_size": 1, "max_batches": None, "native_labels": True, "proc_length": None,
                "root": None, "classes": classes, "resize": [512, 1024], "focal_ref": None,
                "image_resample": "bicubic", "kitti_protocol": None, "carla_focal": None}]
    return Namespace(tgt="cityscapes", src="synthia", classes=classes, resize=[512, 1024],
                     size=[512, 1024], image_resample="bicubic", imported_from=os.path.abspath(path),
                     scoring=scoring)


def official_checkpoint(path):
    """An official DADA / AdvEnt .pth as this repository's checkpoint dict (in memory); None if not one."""
    try:
        state = _plain_state(torch.load(path, map_location="cpu", weights_only=True))
    except Exception:   # not readable as tensors: not an official state dict either
        return None
    if state is None or "layer6.conv2d_list.0.weight" not in state:
        return None
    net, kwargs = official_to_net(state, path)
    args = vars(import_args(path, kwargs["num_classes"]))
    return {"script": "import_checkpoint.py", "iteration": 0, "args": args, "rng": None,
            "models": {"model": net.state_dict()}, "model_specs": {"model": {"arch": "dada", "kwargs": kwargs}},
            "extra": {"inference_model": "model", "imported_from": args["imported_from"]}}
