"""Generic encoder-decoder multi-task network and the repository's inference convention.

Every method's inference model returns, at the input resolution, a dict holding any of
    "semantic": (B, C, H, W) logits      "depth": (B, H, W) metres > 0
    "normals":  (B, 3, H, W) unit vectors "edges": (B, H, W) in [0, 1]
so `evaluate.py` can score any checkpoint. `EncDecNet` is the plainest such model: one
dilated ResNet encoder and one AT/DT decoder per task on layer4 (`UpsampleDecoder`, or the
official code's `OfficialDecoder` with decoder="official").
"""

import math

import torch.nn as nn

from .backbones import build_backbone
from .decoders import TASK_CHANNELS, TASKS, build_decoder, to_prediction


def check_tasks(tasks):
    """Validate a {task: out_channels} map; fixed-size tasks must use their natural channels."""
    if not tasks:
        raise ValueError(f"tasks must name at least one of {', '.join(TASKS)}")
    for task, channels in tasks.items():
        if task not in TASKS:
            raise ValueError(f"unknown task '{task}'; known: {', '.join(TASKS)}")
        expected = TASK_CHANNELS.get(task)
        if expected is not None and channels != expected:
            raise ValueError(f"task '{task}' predicts {expected} channel(s), got {channels}")
        if task == "semantic" and (not isinstance(channels, int) or channels < 2):
            raise ValueError(f"task 'semantic' needs the number of classes (>= 2), got {channels}")
    return dict(tasks)


class EncDecNet(nn.Module):
    """Shared ResNet encoder + one AT/DT upsampling decoder per task (AT/DT Sec. 4 "Architecture")."""

    def __init__(self, backbone="resnet18", output_stride=16, pretrained="none", tasks=None,
                 decoder_width=256, multi_grid=None, depth_scale=1.0, depth_focal=None,
                 decoder="upsample"):
        super().__init__()
        # Depth is predicted in units of depth_scale metres (AT/DT regresses depth / 100).
        self.depth_scale = float(depth_scale)
        # The depth convention, stored with the model so every scorer converts it the same way:
        # None = metres; F = depth as a camera of focal F px sees it (scored x f_sample / F, as
        # AT/DT's eval_task.py rescales a network trained on its source alone).
        self.depth_focal = float(depth_focal) if depth_focal else None
        self.tasks = check_tasks(tasks if tasks is not None else {"semantic": 11})
        self.backbone = build_backbone(backbone, output_stride, pretrained, multi_grid)
        in_channels = self.backbone.channels["layer4"]
        # log2(output_stride) x2 upsamplings bring layer4 back to the input resolution.
        num_up = int(math.log2(output_stride))
        self.decoders = nn.ModuleDict({
            task: build_decoder(decoder, in_channels, channels, num_up, decoder_width)
            for task, channels in self.tasks.items()
        })

    def forward_features(self, x):
        """(B, 3, H, W) -> layer4 features (B, C4, H/os, W/os): the f_k of AT/DT."""
        return self.backbone(x)["layer4"]

    def decode(self, feat, out_size):
        """Layer4 features (possibly transferred, AT/DT G(1->2)) -> prediction dict at out_size."""
        return decode(self.decoders, feat, out_size, self.depth_scale)

    def forward(self, x):
        """(B, 3, H, W) -> {task: prediction} at the input resolution (see module docstring)."""
        return self.decode(self.forward_features(x), x.shape[-2:])


def decode(decoders, feat, out_size, depth_scale=1.0):
    """Run each task decoder and map raw outputs to the prediction convention (metres for depth)."""
    out = {}
    for task, dec in decoders.items():
        raw = dec(feat, out_size)
        out[task] = to_prediction(task, raw) if task != "depth" else depth_scale * to_prediction(task, raw)
    return out
