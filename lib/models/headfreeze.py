"""HeadFreeze's network (Li et al., "Task-assisted domain adaptation with anchor tasks", Sec. 4.4).

A ResNet with an FPN top-down path of three upsampling layers with lateral skip connections,
and one deconvolution output layer per task, so predictions come out at half the input
resolution:

    layer4 (stride 32) --lat4--> P5 --up1 (+lat3 skip from layer3)--> P4 (stride 16)
                                    --up2 (+lat2 skip from layer2)--> P3 (stride 8)
                                    --up3 (+lat1 skip from layer1)--> P2 (stride 4)
    P2 --deconv(task)--> stride 2: normals (3), semantic logits (C) or keypoint heatmaps (K)
    P3 --global average pool--> FC 256 --ReLU--> FC K: keypoint depth (optional, Sec. 4.4)

HeadFreeze freezes "the layers after the second upsampling layer, including any skip
connection weights" (Sec. 4.4): here the third upsampling layer (`up3`), its skip (`lat1`),
every task's deconvolution and the keypoint-depth branch, which reads the second upsampling
layer's output. `freeze_after` (0-3, default 2) moves that point, as the paper tunes the
"layers to freeze" (Sec. 4.4): the layers after the N-th upsampling layer freeze, each
upsampling layer with its skip, and always the output layers. `freeze_head()` stops their
gradients and keeps their BatchNorm in eval mode (the frozen head is a fixed function learned
on the source); the switch is stored as a buffer, so a resumed run comes back frozen.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .backbones import build_backbone
from .decoders import to_normals

# Upsampling layer k (1-3) with its skip connection, bottom-up from P5 (Sec. 4.4).
UPSAMPLING = (("up1", "lat3"), ("up2", "lat2"), ("up3", "lat1"))


def head_module_names(freeze_after=2):
    """The modules HeadFreeze freezes: every upsampling layer after the `freeze_after`-th with its
    skip, and the output layers (Sec. 4.4: after the second upsampling layer, skips included)."""
    if freeze_after not in range(len(UPSAMPLING) + 1):
        raise ValueError(f"freeze_after must be 0-{len(UPSAMPLING)}, got {freeze_after!r}")
    return tuple(n for pair in UPSAMPLING[freeze_after:] for n in pair) + ("heads", "kp_depth")


HEAD_MODULES = head_module_names(2)   # what HeadFreeze freezes by default (Sec. 4.4)


def conv_bn_relu(cin, cout):
    """3x3 conv + BN + ReLU: the FPN merge's smoothing layer (the paper does not give it)."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class HeadFreezeNet(nn.Module):
    """ResNet + FPN with 3 upsampling layers and skips, a deconvolution output per task at half
    the input resolution, optional keypoint-depth FC branch (HeadFreeze Sec. 4.4)."""

    def __init__(self, backbone="resnet50", pretrained="none", tasks=None, width=256,
                 keypoint_depth=0, fc_hidden=256, freeze_after=2):
        super().__init__()
        self.tasks = dict(tasks if tasks is not None else {"normals": 3, "semantic": 11})
        self.head_names = head_module_names(freeze_after)
        self.backbone = build_backbone(backbone, output_stride=32, pretrained=pretrained)
        ch = self.backbone.channels
        self.lat4 = nn.Conv2d(ch["layer4"], width, 1)
        self.lat3, self.lat2, self.lat1 = (nn.Conv2d(ch[s], width, 1) for s in ("layer3", "layer2", "layer1"))
        self.up1, self.up2, self.up3 = (conv_bn_relu(width, width) for _ in range(3))
        # Deconvolution output layer (Sec. 4.4): x2, so stride 4 -> stride 2 = 50% resolution.
        self.heads = nn.ModuleDict({t: nn.ConvTranspose2d(width, c, 4, stride=2, padding=1)
                                    for t, c in self.tasks.items()})
        self.kp_depth = (nn.Sequential(nn.Linear(width, fc_hidden), nn.ReLU(inplace=True),
                                       nn.Linear(fc_hidden, keypoint_depth))
                         if keypoint_depth else None)
        self.register_buffer("head_frozen", torch.zeros((), dtype=torch.bool))

    @staticmethod
    def _up(top, lateral, layer):
        """One upsampling layer: bilinear x2 to the skip's size, add the skip, smooth."""
        top = F.interpolate(top, size=lateral.shape[-2:], mode="bilinear", align_corners=False)
        return layer(top + lateral)

    def pyramid(self, x):
        """(B, 3, H, W) -> {"p5", "p4", "p3", "p2"}: the top-down maps at strides 32, 16, 8, 4."""
        c = self.backbone(x)
        p5 = self.lat4(c["layer4"])
        p4 = self._up(p5, self.lat3(c["layer3"]), self.up1)
        p3 = self._up(p4, self.lat2(c["layer2"]), self.up2)
        p2 = self._up(p3, self.lat1(c["layer1"]), self.up3)
        return {"p5": p5, "p4": p4, "p3": p3, "p2": p2}

    def forward_raw(self, x):
        """Raw outputs at half resolution {task: (B, C, H/2, W/2)}, "keypoint_depth" (B, K) when
        the branch exists, and the pyramid levels (for feature-level adaptation) under "feats"."""
        feats = self.pyramid(x)
        out = {t: head(feats["p2"]) for t, head in self.heads.items()}
        if self.kp_depth is not None:
            out["keypoint_depth"] = self.kp_depth(feats["p3"].mean((2, 3)))
        out["feats"] = feats
        return out

    def forward(self, x):
        """Inference convention (lib/models/encdec.py): unit normals, semantic logits, heatmaps,
        at half the input resolution (scorers resize them to the labels)."""
        raw = self.forward_raw(x)
        raw.pop("feats")
        if "normals" in raw:
            raw["normals"] = to_normals(raw["normals"])
        return raw

    def head_modules(self):
        """The layers after the `freeze_after`-th upsampling layer (by default the second), skip
        weights included, and the output layers (Sec. 4.4)."""
        return [m for name in self.head_names if (m := getattr(self, name)) is not None]

    def head_parameters(self):
        return [p for m in self.head_modules() for p in m.parameters()]

    def freeze_head(self):
        """HeadFreeze (Sec. 3.2): no gradient into the head from now on, its BN in eval mode."""
        self.head_frozen.fill_(True)
        for p in self.head_parameters():
            p.requires_grad_(False)
        return self.train(self.training)

    def train(self, mode=True):
        super().train(mode)
        if bool(self.head_frozen):
            for m in self.head_modules():
                m.eval()
        return self

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if bool(self.head_frozen):   # a checkpoint written after the switch comes back frozen
            for p in self.head_parameters():
                p.requires_grad_(False)
