"""UM-Adapt (Kundu et al., ICCV 2019) networks: the base multi-task model, the task-transfer
networks N(->t), the CCR contour decoder, FCF's feature reconstructor and UM-Adapt-B's joint
discriminator. The paper releases no code and shows no layer tables beyond Fig. 2 / Sec. 3-4;
every size below that the paper does not give is ours and marked so (docs/umadapt.md).

Resolutions (Sec. 4.1): the encoder is a plain (undilated) ResNet, output stride 32, and each
task decoder is Laina et al.'s FCRN: a 1x1 conv to `width` channels and four up-projection
blocks (x16), so the outputs are at half the input size: 228x304 -> 8x10 -> 128x160 (indoor),
256x512 -> 8x16 -> 128x256 (outdoor).
"""
import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from lib.evaluation import resize_prediction

from .backbones import build_backbone, freeze_bn
from .decoders import to_prediction

TASK_ORDER = ("semantic", "depth", "normals")


def unpool2x(x):
    """Laina et al.'s 2x2 unpooling: each value to the top-left of a 2x2 block, zeros elsewhere."""
    b, c, h, w = x.shape
    out = x.new_zeros(b, c, 2 * h, 2 * w)
    out[:, :, ::2, ::2] = x
    return out


class UpProjection(nn.Module):
    """FCRN up-projection block (Laina et al. 2016, Fig. 2c; UM-Adapt Sec. 4.1): unpool x2, then
    conv5x5-BN-ReLU-conv3x3-BN plus a conv5x5-BN projection branch, summed, ReLU."""

    def __init__(self, cin, cout):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(cin, cout, 5, padding=2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout))
        self.proj = nn.Sequential(nn.Conv2d(cin, cout, 5, padding=2, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        x = unpool2x(x)
        return F.relu(self.main(x) + self.proj(x))


class FCRNDecoder(nn.Module):
    """One task decoder C_t (Sec. 3.1, 4.1): 1x1 conv + BN to `width`, four up-projections
    halving the width, a 3x3 prediction conv (Laina et al.; the paper adopts "the number of
    feature maps ... of the final task-based prediction layers" per task)."""

    def __init__(self, in_channels, out_channels, width=1024):
        super().__init__()
        widths = [width // 2 ** i for i in range(5)]
        self.reduce = nn.Sequential(nn.Conv2d(in_channels, width, 1, bias=False), nn.BatchNorm2d(width))
        self.up = nn.Sequential(*[UpProjection(a, b) for a, b in zip(widths[:-1], widths[1:])])
        self.head = nn.Conv2d(widths[-1], out_channels, 3, padding=1)

    def forward(self, z):
        """res5 features (B, C5, h, w) -> raw prediction (B, out, 16h, 16w)."""
        return self.head(self.up(self.reduce(z)))


def task_channels(tasks, num_classes):
    return {t: {"semantic": num_classes, "depth": 1, "normals": 3}[t] for t in tasks}


class UMAdaptNet(nn.Module):
    """Encoder M (ResNet to res5) + one FCRN decoder per task (Sec. 3.1, Fig. 2).

    forward(x) is the repository's inference convention (lib/models/encdec.py): predictions at
    the input resolution (depth in metres, unit normals, semantic logits). Training uses
    forward_raw(x) / decode(z): predictions at the decoder's own size (half the input)."""

    def __init__(self, backbone="resnet50", pretrained="none", tasks=("semantic", "depth", "normals"),
                 num_classes=40, decoder_width=1024):
        super().__init__()
        self.tasks = [t for t in TASK_ORDER if t in tasks]
        self.encoder = build_backbone(backbone, 32, pretrained)
        c5 = self.encoder.channels["layer4"]
        self.decoders = nn.ModuleDict({t: FCRNDecoder(c5, c, decoder_width)
                                       for t, c in task_channels(self.tasks, num_classes).items()})

    def features(self, x):
        """M(x): res5 (layer4) activation, (B, C5, H/32, W/32)."""
        return self.encoder(x)["layer4"]

    def decode(self, z):
        """{task: prediction} at the decoders' size (16x the latent)."""
        return {t: to_prediction(t, d(z)) for t, d in self.decoders.items()}

    def forward_raw(self, x):
        """The training outputs: {task: prediction} at the decoders' size."""
        return self.decode(self.features(x))

    def forward(self, x):
        preds = self.forward_raw(x)
        return {t: resize_prediction(t, p, x.shape[-2:]) for t, p in preds.items()}


def encode_maps(maps, num_classes):
    """The input representation of a task-transfer network (ours; Sec. 3.1.1 does not say):
    semantic as class probabilities (logits -> softmax) or one-hot labels (ignore -> all 0),
    depth as log(1 + metres) (invalid -> 0), normals as the 3 unit components (invalid -> 0).
    `maps`: {task: prediction or label}, concatenated in TASK_ORDER."""
    chans = []
    for task in TASK_ORDER:
        if task not in maps:
            continue
        x = maps[task]
        if task == "semantic":
            if x.is_floating_point():
                chans.append(x.softmax(1))
            else:
                valid = (x != 255)
                one_hot = F.one_hot(torch.where(valid, x, torch.zeros_like(x)), num_classes)
                chans.append(one_hot.permute(0, 3, 1, 2).float() * valid[:, None])
        elif task == "depth":
            chans.append(torch.log1p(x.clamp_min(0))[:, None])
        else:
            chans.append(x)
    return torch.cat(chans, 1)


class TaskTransferNet(nn.Module):
    """N(->t) of Sec. 3.1.1: a small encoder-decoder from the other tasks' maps to task t.
    Ours (the paper gives no layers): three stride-2 conv3x3+ReLU (w, 2w, 4w), three
    bilinear x2 + conv3x3+ReLU back, a 3x3 prediction conv; no BatchNorm, so a frozen N is
    a fixed function in any mode. Returns the prediction of t (lib.models.decoders)."""

    def __init__(self, target, inputs, num_classes, width=32):
        super().__init__()
        self.target, self.inputs, self.num_classes = target, list(inputs), num_classes
        cin = sum(task_channels(self.inputs, num_classes).values())
        cout = task_channels([target], num_classes)[target]
        w = [width, 2 * width, 4 * width]
        self.down = nn.Sequential(
            nn.Conv2d(cin, w[0], 3, 2, 1), nn.ReLU(inplace=True),
            nn.Conv2d(w[0], w[1], 3, 2, 1), nn.ReLU(inplace=True),
            nn.Conv2d(w[1], w[2], 3, 2, 1), nn.ReLU(inplace=True))
        self.up = nn.ModuleList([nn.Conv2d(w[2], w[1], 3, 1, 1), nn.Conv2d(w[1], w[0], 3, 1, 1),
                                 nn.Conv2d(w[0], w[0], 3, 1, 1)])
        self.head = nn.Conv2d(w[0], cout, 3, 1, 1)

    def forward(self, maps):
        """maps: {task: prediction or label} holding every input task -> prediction of target."""
        x = encode_maps({t: maps[t] for t in self.inputs}, self.num_classes)
        size = x.shape[-2:]
        h = self.down(x)
        for conv in self.up:
            h = F.relu(conv(F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=False)))
        h = F.interpolate(h, size=size, mode="bilinear", align_corners=False)
        return to_prediction(self.target, self.head(h))


class ContourDecoder(nn.Sequential):
    """C_contour of CCR (Sec. 3.2, Fig. 3a): "a shallow (4 layer) contour decoder" on res5.
    Ours: four (bilinear x2, conv3x3) layers, 256-128-64-1 wide, ReLU between them, sigmoid at
    the end, so the contour map lands at the task outputs' size (x16)."""

    def __init__(self, in_channels, width=256):
        widths = [in_channels, width, width // 2, width // 4, 1]
        mods = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            mods += [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False), nn.Conv2d(a, b, 3, padding=1)]
            mods.append(nn.ReLU(inplace=True) if i < 3 else nn.Sigmoid())
        super().__init__(*mods)

    def forward(self, z):
        return super().forward(z)[:, 0]


class FeatureReconstructor(nn.Sequential):
    """FCF's reconstruction network (AdaDepth, Kundu et al. CVPR 2018; UM-Adapt Sec. 3.2):
    res5 back to the res4f activation it came from. Ours: bilinear x2 (res5 is at half res4's
    size in the undilated ResNet) + conv3x3 C5->C4 + ReLU + conv3x3 C4->C4 + ReLU (res4f is
    post-ReLU)."""

    def __init__(self, c5, c4):
        super().__init__(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                         nn.Conv2d(c5, c4, 3, padding=1), nn.ReLU(inplace=True),
                         nn.Conv2d(c4, c4, 3, padding=1), nn.ReLU(inplace=True))

    def forward(self, z, size):
        return F.interpolate(super().forward(z), size=size, mode="bilinear", align_corners=False)


class JointDiscriminator(nn.Module):
    """UM-Adapt-B's single discriminator on (latent, depth, normals, semantic) (Sec. 3.3.1).
    The paper's details are in its supplementary, which is not available; ours: the maps
    (encode_maps) go through stride-2 4x4 convs down to the latent's size, are concatenated
    with a 1x1 projection of the latent, and two more convs give one logit per location
    (LeakyReLU 0.2, no BatchNorm, as DADA's output discriminator)."""

    def __init__(self, latent_channels, map_channels, width=64, latent_stride=16):
        super().__init__()
        layers, c = [], map_channels
        for i in range(int(latent_stride).bit_length() - 1):       # log2(stride) halvings
            out = min(width * 2 ** i, 4 * width)
            layers += [nn.Conv2d(c, out, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
            c = out
        self.maps = nn.Sequential(*layers)
        self.latent = nn.Sequential(nn.Conv2d(latent_channels, 4 * width, 1), nn.LeakyReLU(0.2, inplace=True))
        self.joint = nn.Sequential(nn.Conv2d(c + 4 * width, 4 * width, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True),
                                   nn.Conv2d(4 * width, 1, 3, 1, 1))

    def forward(self, z, maps):
        m = self.maps(maps)
        m = F.interpolate(m, size=z.shape[-2:], mode="bilinear", align_corners=False)
        return self.joint(torch.cat([self.latent(z), m], 1))


def target_encoder(base_encoder, target_bn_stats=False):
    """Mt of Sec. 3.1.2: a copy of Ms in which only res5 (layer4) trains. The layers up to
    res4f are frozen; their BatchNorm keeps Ms's running statistics (eval mode) unless
    `target_bn_stats`, where they normalise with target batch statistics in train mode
    (their weights stay frozen either way)."""
    mt = copy.deepcopy(base_encoder)
    for name, child in mt.named_children():
        if name == "layer4":
            continue
        child.requires_grad_(False)
        if not target_bn_stats:
            freeze_bn(child)
    return mt
