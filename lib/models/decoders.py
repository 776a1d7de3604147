"""Dense-prediction decoders and the raw-output -> prediction conventions.

`UpsampleDecoder` is AT/DT's decoder (Sec. 4 "Architecture"): a stack of bilinear
upsampling + convolution blocks that brings stride-16 encoder features back to the input
resolution; `OfficialDecoder` is the official ICCV code's (nearest upsampling, two convs per
scale, ELU). Decoders of different tasks are "identical but for the final prediction
layer", so each decoder exposes that layer as `head` and everything before it as
`features()`.

`to_depth`, `to_normals`, `to_edges` map raw decoder outputs to the repository's
prediction convention (see `lib/models/encdec.py`): depth in metres (B, H, W) > 0, unit
normals (B, 3, H, W), edge strength (B, H, W) in [0, 1], a reconstructed image (B, 3, H, W)
in [0, 1] (AT/DT Table 5's autoencoder source task). Semantic logits stay raw.
"""

import torch.nn as nn
import torch.nn.functional as F

# Channels of the raw output for every task but semantic (whose channels = classes).
TASK_CHANNELS = {"depth": 1, "normals": 3, "edges": 1, "image": 3}
TASKS = ("semantic", "depth", "normals", "edges", "image")


class UpBlock(nn.Sequential):
    """Bilinear x2 upsample, then conv 3x3 + BN + ReLU (one AT/DT decoder step)."""

    def __init__(self, in_channels, out_channels):
        super().__init__(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class UpsampleDecoder(nn.Module):
    """AT/DT decoder (`--decoder upsample`): `num_up` x (bilinear x2 + conv-BN-ReLU) with halving
    width, then a 3x3 head. Sec. 4 says "a stack of bilinear upsample plus convolutional layers";
    one conv per scale, BN and ReLU are ours (the official decoder is OfficialDecoder).

    Widths are width, width/2, ... but never below `min_width`. The head is a plain 3x3
    conv (with bias) to `out_channels`; it is the only task-specific layer.
    """

    def __init__(self, in_channels, out_channels, num_up=4, width=256, min_width=32):
        super().__init__()
        blocks, channels = [], in_channels
        for i in range(num_up):
            width_i = max(width // 2**i, min_width)
            blocks.append(UpBlock(channels, width_i))
            channels = width_i
        self.blocks = nn.Sequential(*blocks)
        self.num_up, self.out_channels = num_up, out_channels
        self.head = nn.Conv2d(channels, out_channels, 3, padding=1)

    def features(self, feat):
        """Pre-prediction activation: (B, C_in, h, w) -> (B, C_last, h * 2**num_up, w * 2**num_up)."""
        return self.blocks(feat)

    def forward(self, feat, out_size=None):
        """Raw prediction; with `out_size` (H, W) a final bilinear resize makes it exactly that size."""
        out = self.head(self.features(feat))
        if out_size is not None and tuple(out.shape[-2:]) != tuple(out_size):
            # Inputs not divisible by the output stride land a few pixels off after 2**num_up.
            out = F.interpolate(out, size=tuple(out_size), mode="bilinear", align_corners=False)
        return out


class _OfficialConv(nn.Sequential):
    """core/ops.py's conv: 3x3 conv, then BN (without a conv bias) when `bn`, then ELU when `elu`."""

    def __init__(self, in_channels, out_channels, bn=True, elu=True):
        mods = [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=not bn)]
        mods += [nn.BatchNorm2d(out_channels)] if bn else []
        mods += [nn.ELU(inplace=True)] if elu else []
        super().__init__(*mods)


class OfficialDecoder(nn.Module):
    """AT/DT's official ICCV decoder (CVLAB-Unibo/ATDT core/models.py, build_decoder_dilated_resnet;
    `--decoder official`): per x2 scale, nearest upsampling + conv ("upconv"), then a second conv
    ("iconv"), each 3x3 with BN and ELU, at widths width, width/2, width/4 (128-64-32 at the
    official width); the last scale's two convs have `out_channels` channels (the first with ELU
    and no BN, the second linear: the head). As the official code: the upconv of the last hidden
    scale (width/4) has no BN."""

    def __init__(self, in_channels, out_channels, num_up=4, width=128, min_width=1):
        super().__init__()
        blocks, channels = [], in_channels
        for i in range(num_up - 1):
            width_i = max(width // 2**i, min_width)
            blocks.append(nn.Sequential(
                nn.Upsample(scale_factor=2, mode="nearest"),
                _OfficialConv(channels, width_i, bn=i != num_up - 2),
                _OfficialConv(width_i, width_i)))
            channels = width_i
        blocks.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                    _OfficialConv(channels, out_channels, bn=False)))
        self.blocks = nn.Sequential(*blocks)
        self.num_up, self.out_channels = num_up, out_channels
        self.head = nn.Conv2d(out_channels, out_channels, 3, padding=1)   # iconv1, linear

    def features(self, feat):
        """Pre-prediction activation: (B, C_in, h, w) -> (B, out_channels, h * 2**num_up, w * 2**num_up)."""
        return self.blocks(feat)

    forward = UpsampleDecoder.forward


DECODERS = {"upsample": UpsampleDecoder, "official": OfficialDecoder}


def build_decoder(style, in_channels, out_channels, num_up, width):
    """A task decoder of `style`: "upsample" (ours, after AT/DT Sec. 4) or "official" (ICCV code)."""
    if style not in DECODERS:
        raise ValueError(f"unknown decoder {style!r}; known: {', '.join(DECODERS)}")
    return DECODERS[style](in_channels, out_channels, num_up=num_up, width=width)


def to_depth(raw, min_depth=1e-3):
    """(B, 1, H, W) raw -> (B, H, W) metres via softplus + min_depth.

    Softplus rather than exp: it is linear for large inputs, so an L1 loss in metres (AT/DT)
    has bounded gradients and far depths cannot overflow under fp16; `min_depth` keeps the
    output strictly positive where softplus underflows to 0.
    """
    return F.softplus(raw).squeeze(1) + min_depth


def to_normals(raw):
    """(B, 3, H, W) raw -> unit normals, L2-normalised over the channel dimension."""
    return F.normalize(raw, p=2, dim=1, eps=1e-6)


def to_edges(raw):
    """(B, 1, H, W) raw -> (B, H, W) edge strength in [0, 1] via sigmoid."""
    return raw.sigmoid().squeeze(1)


def to_image(raw):
    """(B, 3, H, W) raw -> (B, 3, H, W) RGB in [0, 1] via sigmoid (an autoencoder's output)."""
    return raw.sigmoid()


def _identity(raw):
    return raw


# task -> raw-to-prediction function; semantic predictions are the logits themselves.
TASK_ACTIVATIONS = {"semantic": _identity, "depth": to_depth, "normals": to_normals, "edges": to_edges,
                    "image": to_image}


def to_prediction(task, raw):
    """Turn a raw decoder output into the prediction convention of `task`."""
    if task not in TASK_ACTIVATIONS:
        raise ValueError(f"unknown task '{task}'; known: {', '.join(TASK_ACTIVATIONS)}")
    return TASK_ACTIVATIONS[task](raw)
