"""UM-Adapt (Kundu et al., ICCV 2019) networks: the base multi-task model, the task-transfer
networks N(->t), the CCR contour decoder, FCF's feature reconstructor and UM-Adapt-B's joint
discriminator. The paper releases no code. Its supplementary material gives the layers of
N(->t) (Table 2) and of the discriminator (Table 1), built here as printed; the base model
follows Laina et al.'s FCRN (Sec. 4.1). Every size the paper does not give is ours and marked
so (docs/umadapt.md).

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


def encode_map(task, x):
    """One map as the task-transfer networks and the discriminator read it (ours; Supp. Tables
    1-2 name the inputs "depth-map", "normal-map", "seg-map" only): semantic as class
    probabilities (softmax of a prediction, one-hot / pseudo-softmax of a label, lib/umadapt.py),
    depth as log(1 + metres) (invalid -> 0), normals as their 3 components (invalid -> 0)."""
    if task == "depth":
        return torch.log1p(x.clamp_min(0))[:, None]
    if task == "semantic" and not x.is_floating_point():
        raise TypeError("encode_map: give semantic maps as class probabilities (lib.umadapt.true_maps)")
    return x


LEAK = 0.2      # leaky ReLU slope: the tables do not give it; DCGAN / pix2pix's 0.2 (ours)


def conv(cin, cout, k, stride=1, bn=False):
    """"Conv" (conv + leaky ReLU) or, with bn, "Conv*" (conv + BatchNorm + leaky ReLU) of Supp.
    Tables 1-2. The tables give plain rows no non-linearity; we add the leaky ReLU, else two
    stacked convs would be one linear map (ours). Padding k // 2: stride 2 halves the size."""
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, bias=not bn)]
    layers += [nn.BatchNorm2d(cout)] if bn else []
    return nn.Sequential(*layers, nn.LeakyReLU(LEAK, inplace=True))


class Deconv(nn.Module):
    """"Deconv*" (bn=True) / "Deconv" (bn=False) of Supp. Tables 1-2: a transposed conv, then
    BatchNorm for Deconv* only, then a leaky ReLU (ours for plain Deconv). forward(x, size) returns exactly `size` (the matching encoder size), so any input
    size comes back to itself."""

    def __init__(self, cin, cout, k, stride, bn=True):
        super().__init__()
        self.deconv = nn.ConvTranspose2d(cin, cout, k, stride, k // 2, bias=not bn)
        self.post = nn.Sequential(*([nn.BatchNorm2d(cout)] if bn else []), nn.LeakyReLU(LEAK, inplace=True))

    def forward(self, x, size=None):
        return self.post(self.deconv(x, output_size=None if size is None else list(size)))


def _widths(width):
    """Table widths scaled by width / 64 (64: the tables' own; smaller for CPU runs and tests)."""
    return lambda n: max(1, n * width // 64)


class TaskTransferNet(nn.Module):
    """N(->t) of Sec. 3.1.1 as Supp. Table 2 gives it (its N(->seg)(depth, normals) at 128x160):
    per input map C1 Conv 3x3 64 and C2 Conv* 3x3 128 /2, concatenated; C3m Conv 3x3 256 /2;
    Conv* 3x3 512 /2 (the table's second "C3m", input "C2m"); C4m Conv* 3x3 512; EN Conv 3x3
    1024 /2 (the bottleneck, 8x10 indoors); C5m-C8m Deconv* 3x3 512, 512, 256, 128 x2; C9 Conv
    1x1 to task t (softmax for segmentation: the loss takes logits). Inputs: {task: encode_map}.
    `width`: C1's width (64 = the table; every layer scales with it)."""

    def __init__(self, target, inputs, num_classes, width=64):
        super().__init__()
        self.target, self.inputs = target, [t for t in TASK_ORDER if t in inputs]
        c, chans = _widths(width), task_channels(TASK_ORDER, num_classes)
        self.c1 = nn.ModuleDict({t: conv(chans[t], c(64), 3) for t in self.inputs})
        self.c2 = nn.ModuleDict({t: conv(c(64), c(128), 3, 2, bn=True) for t in self.inputs})
        self.c3m = conv(len(self.inputs) * c(128), c(256), 3, 2)
        self.c3m_2 = conv(c(256), c(512), 3, 2, bn=True)
        self.c4m = conv(c(512), c(512), 3, 1, bn=True)
        self.en = conv(c(512), c(1024), 3, 2)
        ups = [c(1024), c(512), c(512), c(256), c(128)]
        self.up = nn.ModuleList([Deconv(a, b, 3, 2) for a, b in zip(ups[:-1], ups[1:])])   # C5m-C8m
        self.c9 = nn.Conv2d(c(128), chans[target], 1)

    def forward(self, maps):
        """maps: {task: encoded map} holding every input task -> prediction of the target task."""
        x = torch.cat([self.c2[t](self.c1[t](maps[t])) for t in self.inputs], 1)
        sizes = [maps[self.inputs[0]].shape[-2:], x.shape[-2:]]
        x = self.c3m(x)
        sizes.append(x.shape[-2:])
        x = self.c4m(self.c3m_2(x))
        sizes.append(x.shape[-2:])
        x = self.en(x)
        for up, size in zip(self.up, reversed(sizes)):
            x = up(x, size)
        return to_prediction(self.target, self.c9(x))


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
    """UM-Adapt-B's critic on (latent, depth, normals, semantics) (Sec. 3.3.1), Supp. Table 1:
    per map C1 Conv 3x3 64, C2 Conv* 3x3 128 /2; C3n+d Conv 3x3 256 /2 on depth || normals,
    C3s Conv* 3x3 256 /2 on semantics; the latent through C1m Deconv 1x1 512, C2m Deconv* 3x3
    512 x2 and C3m Deconv* 3x3 256 x2 (the table prints stride 1 for C2m and C1m as C3m's
    input; its output sizes, 8x10 -> 16x20 -> 32x40, need x2 twice, so we read C2m -> C3m);
    fused at 32x40: C1c Conv 1x1 512, C2c Conv* 3x3 1024 /2, C3c Conv* 3x3 512 /2, C4c Conv
    1x1 1: one critic value per 8x10 patch. Trained as WGAN-GP (Supp.; lib.losses). `tasks`:
    the maps it reads (any subset); `width`: C1's width (64 = the table)."""

    def __init__(self, latent_channels, tasks, num_classes, width=64):
        super().__init__()
        self.tasks = [t for t in TASK_ORDER if t in tasks]
        self.geo = [t for t in ("depth", "normals") if t in self.tasks]
        c, chans = _widths(width), task_channels(TASK_ORDER, num_classes)
        self.c1 = nn.ModuleDict({t: conv(chans[t], c(64), 3) for t in self.tasks})
        self.c2 = nn.ModuleDict({t: conv(c(64), c(128), 3, 2, bn=True) for t in self.tasks})
        self.c3nd = conv(len(self.geo) * c(128), c(256), 3, 2) if self.geo else None
        self.c3s = conv(c(128), c(256), 3, 2, bn=True) if "semantic" in self.tasks else None
        self.c1m = Deconv(latent_channels, c(512), 1, 1, bn=False)
        self.c2m, self.c3m = Deconv(c(512), c(512), 3, 2), Deconv(c(512), c(256), 3, 2)
        fused = (1 + bool(self.geo) + ("semantic" in self.tasks)) * c(256)
        self.c1c = conv(fused, c(512), 1)
        self.c2c, self.c3c = conv(c(512), c(1024), 3, 2, bn=True), conv(c(1024), c(512), 3, 2, bn=True)
        self.c4c = nn.Conv2d(c(512), 1, 1)

    def forward(self, z, *maps):
        """z: res5 (B, C5, h, w); maps: the encoded maps of self.tasks in that order (a flat list, as
        WGAN-GP interpolates it), at 16x z's size -> one critic value per patch (B, 1, h, w)."""
        h = {t: self.c2[t](self.c1[t](m)) for t, m in zip(self.tasks, maps)}
        parts = ([self.c3s(h["semantic"])] if self.c3s is not None else []) + \
                ([self.c3nd(torch.cat([h[t] for t in self.geo], 1))] if self.geo else [])
        m = self.c1m(z)
        m = self.c2m(m, [2 * s for s in m.shape[-2:]])
        parts.append(self.c3m(m, parts[0].shape[-2:]))
        return self.c4c(self.c3c(self.c2c(self.c1c(torch.cat(parts, 1)))))


def target_model(base, target_bn_stats=False):
    """Mt with the task decoders (Sec. 3.1.2): a copy of the base model whose encoder is
    target_encoder's and whose decoders are frozen (eval mode unless `target_bn_stats`)."""
    net = copy.deepcopy(base)
    net.encoder = target_encoder(base.encoder, target_bn_stats)
    net.decoders.requires_grad_(False)
    if not target_bn_stats:
        freeze_bn(net.decoders.eval())
    return net


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


def trunk(enc, x):
    """The encoder up to res4f (layer3), without a graph: the part Mt shares frozen with Ms."""
    with torch.no_grad():
        return enc.layer3(enc.layer2(enc.layer1(enc.maxpool(enc.relu(enc.bn1(enc.conv1(x)))))))


def batch_stats_res5(base_encoder):
    """A frozen copy of Ms's res5 whose BatchNorm normalises with batch statistics (train mode,
    momentum 0: the running statistics never move). UM-Adapt-B's real latent goes through it so
    that the critic cannot tell Ms(x_s) from Mt(x_t) by BatchNorm mode alone (Mt's res5 trains
    in train mode; ours: the paper does not discuss BatchNorm)."""
    res5 = copy.deepcopy(base_encoder.layer4).requires_grad_(False).train()
    for m in res5.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = 0.0
            # a copy of a freeze_bn'd layer would carry its eval-mode pre-hook: drop it
            for key, hook in list(m._forward_pre_hooks.items()):
                if getattr(hook, "__name__", "") == "_keep_bn_frozen":
                    del m._forward_pre_hooks[key]
            m._bn_frozen = False
    return res5


def target_forward(net, x):
    """Mt(x) split at res4f: the frozen trunk (no graph), then res5 and the frozen decoders."""
    f4 = trunk(net.encoder, x)
    z = net.encoder.layer4(f4)
    return f4, z, {k: v.float() for k, v in net.decode(z).items()}
