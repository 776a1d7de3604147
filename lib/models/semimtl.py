"""SemiMTL's multi-task network and domain-aware discriminator (Wang et al., Sec. 3.4).

`SemiMtlNet`: a dilated ResNet encoder (ResNet-101 in the paper) shared by a PSP
segmentation decoder (pyramid pooling over 1x1, 2x2, 3x3 and 6x6 bins, PSPNet) and a depth
decoder (convolutions and x2 upsamplings, then a regression layer); both outputs are
upsampled to the input size. `shared_encoder=False` gives every task its own encoder: the
single-task (STL) and single-task DA baselines of Sec. 4.2, kept in one module so one
checkpoint scores both tasks.

Depth (Sec. 4.1: "inverse depth ... the sky as zero"). `depth_target="inverse"` regresses
inv_depth_scale / depth_m, the disparity in pixels of a stereo rig with baseline x focal =
inv_depth_scale (default 0.209313 m x 2262.52 px, Cityscapes' rig: for Cityscapes this is
the disparity of its own files, (p - 1) / 256 at 2048x1024); depth 0 (sky, infinity) is 0.
`depth_target="height"` regresses the label itself (the ISPRS nDSM height in [0, 1]).
Inference (`forward`) returns the repository's convention: {"semantic": logits, "depth":
metres (or the height)} at the input size; `forward_raw` returns the training outputs.

`DomainDiscriminator`: five 4x4 stride-2 convs 64-128-256-512-classes, spectral norm and
LeakyReLU 0.2 after each of the first four, logits upsampled to the input size. With
K datasets SemiMTL uses K + 1 classes (0 = ground truth, k = a prediction of dataset k,
eq. 2); SemiSD and Tsai's DA use 2.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import spectral_norm

from .backbones import build_backbone
from .decoders import UpBlock

CITYSCAPES_BASELINE_FOCAL = 0.209313 * 2262.52   # m x px: disparity (px) = this / depth (m)
DEPTH_TARGETS = ("inverse", "height")
MAX_DEPTH = 1000.0   # inverse depth below scale / MAX_DEPTH reads as this many metres


def _conv_bn_relu(cin, cout, k):
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class PSPHead(nn.Module):
    """PSP segmentation decoder (Sec. 3.4; Zhao et al. 2017): average pooling to 1, 2, 3, 6
    bins, a 1x1 conv to C/4 per bin, upsampled and concatenated with the features, then a
    3x3 conv, dropout 0.1 and a 1x1 classifier (PSPNet's head)."""

    def __init__(self, in_channels, num_classes, width=512, bins=(1, 2, 3, 6)):
        super().__init__()
        reduced = in_channels // len(bins)
        self.stages = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(b), _conv_bn_relu(in_channels, reduced, 1)) for b in bins)
        self.bottleneck = _conv_bn_relu(in_channels + reduced * len(bins), width, 3)
        self.classifier = nn.Sequential(nn.Dropout2d(0.1), nn.Conv2d(width, num_classes, 1))

    def forward(self, feat):
        size = feat.shape[-2:]
        pooled = [F.interpolate(s(feat), size=size, mode="bilinear", align_corners=False)
                  for s in self.stages]
        return self.classifier(self.bottleneck(torch.cat([feat, *pooled], dim=1)))


class DepthDecoder(nn.Module):
    """Depth decoder (Sec. 3.4): a 3x3 conv, log2(output stride) x (x2 upsampling + conv 3x3
    + BN + ReLU) at halving widths, then a 3x3 regression layer to one channel (no activation:
    the inverse depth of the sky is 0)."""

    def __init__(self, in_channels, width=256, output_stride=8):
        super().__init__()
        blocks, channels = [_conv_bn_relu(in_channels, width, 3)], width
        for i in range(int(math.log2(output_stride))):
            out = max(width // 2 ** (i + 1), 32)
            blocks.append(UpBlock(channels, out))
            channels = out
        self.blocks = nn.Sequential(*blocks)
        self.regress = nn.Conv2d(channels, 1, 3, padding=1)

    def forward(self, feat):
        return self.regress(self.blocks(feat))


class SemiMtlNet(nn.Module):
    """Shared ResNet encoder + PSP segmentation and depth decoders (Sec. 3.4); per-task
    encoders with shared_encoder=False (STL)."""

    def __init__(self, backbone="resnet101", num_classes=19, tasks=("semantic", "depth"),
                 output_stride=8, pretrained="none", decoder_width=512, shared_encoder=True,
                 depth_target="inverse", inv_depth_scale=CITYSCAPES_BASELINE_FOCAL):
        super().__init__()
        self.tasks = tuple(tasks)
        if not self.tasks or any(t not in ("semantic", "depth") for t in self.tasks):
            raise ValueError(f"tasks must be a non-empty subset of semantic, depth, got {list(tasks)}")
        if depth_target not in DEPTH_TARGETS:
            raise ValueError(f"depth_target must be one of {DEPTH_TARGETS}, got {depth_target!r}")
        self.shared_encoder = bool(shared_encoder)
        self.depth_target, self.inv_depth_scale = depth_target, float(inv_depth_scale)
        self.depth_focal = None   # depth in metres (lib/evaluation.py)
        names = ["shared"] if self.shared_encoder else list(self.tasks)
        self.encoders = nn.ModuleDict({n: build_backbone(backbone, output_stride, pretrained) for n in names})
        channels = self.encoders[names[0]].channels["layer4"]
        heads = {"semantic": lambda: PSPHead(channels, num_classes, decoder_width),
                 "depth": lambda: DepthDecoder(channels, decoder_width // 2, output_stride)}
        self.decoders = nn.ModuleDict({t: heads[t]() for t in self.tasks})

    def forward_raw(self, x, tasks=None):
        """x (B, 3, H, W) -> {task: raw output at H x W}: semantic logits (B, C, H, W), depth
        regression (B, H, W). Only `tasks` are computed (default: all), and only their encoders."""
        tasks = self.tasks if tasks is None else tuple(tasks)
        size, feats, out = x.shape[-2:], {}, {}
        for t in tasks:
            enc = "shared" if self.shared_encoder else t
            if enc not in feats:
                feats[enc] = self.encoders[enc](x)["layer4"]
            raw = F.interpolate(self.decoders[t](feats[enc]), size=size, mode="bilinear", align_corners=False)
            out[t] = raw if t == "semantic" else raw[:, 0]
        return out

    def to_depth(self, raw):
        """Raw depth output -> metres (inverse: scale / raw, capped at MAX_DEPTH) or the height."""
        if self.depth_target == "height":
            return raw
        return self.inv_depth_scale / raw.clamp_min(self.inv_depth_scale / MAX_DEPTH)

    def forward(self, x):
        """The repository's inference convention (lib/models/encdec.py) at the input size."""
        out = self.forward_raw(x)
        if "depth" in out:
            out["depth"] = self.to_depth(out["depth"])
        return out


PAD_DEPTH = -1.0   # depth of pixels the augmentation made up (padding, rotated-in corners): no label


def depth_target(depth, kind, scale=CITYSCAPES_BASELINE_FOCAL, holes="zero"):
    """The depth regression target and its mask (Sec. 4.1): inverse = scale / depth with 0
    where depth is 0 (sky / infinity: a valid target), or, with holes="mask", those pixels left
    out (ours: Cityscapes' disparity holes and its sky are both 0 and go together); height = the
    label itself where it is > 0. Pixels at PAD_DEPTH (augmentation padding) are never a target:
    padding is not sky."""
    if kind == "height":
        return depth, depth > 0
    inv = torch.where(depth > 0, scale / depth.clamp_min(1e-6), torch.zeros_like(depth))
    if holes == "mask":
        return inv, depth > 0
    padded = depth < 0
    return inv, (~padded if padded.any() else None)


class DomainDiscriminator(nn.Module):
    """Domain-aware discriminator (Sec. 3.4, after DCGAN): 4x4 stride-2 convs
    in->64->128->256->512->classes, spectral norm + LeakyReLU 0.2 after the first four, logits
    upsampled (bilinear) to the input size. classes = K + 1 for SemiMTL (eq. 2)."""

    def __init__(self, in_channels, num_classes, width=64):
        super().__init__()
        chans = [in_channels, width, width * 2, width * 4, width * 8]
        layers = []
        for cin, cout in zip(chans[:-1], chans[1:]):
            layers += [spectral_norm(nn.Conv2d(cin, cout, 4, stride=2, padding=1)), nn.LeakyReLU(0.2, inplace=True)]
        layers.append(nn.Conv2d(chans[-1], num_classes, 4, stride=2, padding=1))
        self.net = nn.Sequential(*layers)
        self.num_classes = num_classes

    def forward(self, z):
        """z (B, C, H, W) -> class logits (B, classes, H, W)."""
        return F.interpolate(self.net(z), size=z.shape[-2:], mode="bilinear", align_corners=False)
