"""Dense-prediction decoders and the raw-output -> prediction conventions.

`UpsampleDecoder` is AT/DT's decoder (Sec. 4 "Architecture"): a stack of bilinear
upsampling + convolution blocks that brings stride-16 encoder features back to the input
resolution. Decoders of different tasks are "identical but for the final prediction
layer", so the decoder exposes that layer as `head` and everything before it as
`features()`.

`to_depth`, `to_normals`, `to_edges` map raw decoder outputs to the repository's
prediction convention (see `lib/models/encdec.py`): depth in metres (B, H, W) > 0, unit
normals (B, 3, H, W), edge strength (B, H, W) in [0, 1]. Semantic logits stay raw.
"""

import torch.nn as nn
import torch.nn.functional as F

# Channels of the raw output for every task but semantic (whose channels = classes).
TASK_CHANNELS = {"depth": 1, "normals": 3, "edges": 1}
TASKS = ("semantic", "depth", "normals", "edges")


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
    """AT/DT decoder: `num_up` x (upsample x2 + conv-BN-ReLU) with halving width, then a 3x3 head.

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
        self.out_channels = out_channels
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


def _identity(raw):
    return raw


# task -> raw-to-prediction function; semantic predictions are the logits themselves.
TASK_ACTIVATIONS = {"semantic": _identity, "depth": to_depth, "normals": to_normals, "edges": to_edges}


def to_prediction(task, raw):
    """Turn a raw decoder output into the prediction convention of `task`."""
    if task not in TASK_ACTIVATIONS:
        raise ValueError(f"unknown task '{task}'; known: {', '.join(TASK_ACTIVATIONS)}")
    return TASK_ACTIVATIONS[task](raw)
