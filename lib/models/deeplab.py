"""DeepLab-v2 on a dilated ResNet, built as ADVENT's `advent/model/deeplabv2.py` builds it
(the segmentation network of AdvEnt and DADA, DADA Sec. 4.1 "Network architecture").

What makes it the official network rather than torchvision's dilated ResNet (backbones.py):
- Caffe-style Bottleneck: the stride sits on the first 1x1 conv, not on the 3x3 conv;
- output stride 8: layer3 and layer4 have stride 1 and *every* block of them uses dilation
  2 and 4 (torchvision keeps the previous dilation in a stage's first block);
- a 3x3 stride-2 max pool with ceil_mode=True (a 256x512 input gives 33x65 logits);
- the classifier is the SUM of four 3x3 convs with bias at dilation = padding 6, 12, 18, 24
  (DeepLab-v2's ASPP), weights drawn from N(0, 0.01);
- BatchNorm affine parameters never train (requires_grad False). Their statistics follow
  the module's mode: the official loop keeps the model in train mode, so BN normalises with
  the batch's statistics and updates its running ones; `freeze_bn_stats=True` instead uses
  `lib.models.freeze_bn` (running statistics, eval mode for good).

Backbones: resnet101 (3, 4, 23, 3 Bottlenecks, the paper's), resnet50 (3, 4, 6, 3) and, for
CPU runs, resnet18: torchvision-style BasicBlocks (2, 2, 2, 2; stride on the first 3x3 conv,
both 3x3 convs of a layer3 / layer4 block at the stage's dilation), layer4 of 512 channels.

State-dict names below the root equal the official ones (conv1, bn1, layer1.0.conv1, ...,
layer1.0.downsample.0/1), which are also torchvision's; lib/models/dada.py maps the head.
"""

import torch.nn as nn

from .backbones import freeze_bn

ASPP_RATES = (6, 12, 18, 24)


def _bn(channels):
    """BatchNorm whose affine parameters never train (official `affine_par` + requires_grad False)."""
    bn = nn.BatchNorm2d(channels, affine=True)
    for p in bn.parameters():
        p.requires_grad_(False)
    return bn


class CaffeBottleneck(nn.Module):
    """ADVENT deeplabv2.py Bottleneck: 1x1 (stride here) -> 3x3 (dilated) -> 1x1 x4, residual."""

    expansion = 4

    def __init__(self, inplanes, planes, stride=1, dilation=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False)
        self.bn1 = _bn(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = _bn(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = _bn(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        """relu(bn3(conv3(...)) + shortcut), as the official block."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class DilatedBasicBlock(nn.Module):
    """ResNet-18 block for CPU runs: 3x3 (stride here) -> 3x3, both at the stage's dilation."""

    expansion = 1

    def __init__(self, inplanes, planes, stride=1, dilation=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=dilation,
                               dilation=dilation, bias=False)
        self.bn1 = _bn(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = _bn(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        """relu(bn2(conv2(relu(bn1(conv1 x)))) + shortcut)."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


# name -> (block, blocks per stage, width of conv1 and layer1)
DEPTHS = {
    "resnet18": (DilatedBasicBlock, (2, 2, 2, 2), 64),
    "resnet50": (CaffeBottleneck, (3, 4, 6, 3), 64),
    "resnet101": (CaffeBottleneck, (3, 4, 23, 3), 64),
    "resnet-tiny": (DilatedBasicBlock, (1, 1, 1, 1), 16),   # --smoke and tests (backbones.py)
}
# (planes, stride, dilation) of layer1..layer4: output stride 8 (ADVENT ResNetMulti.__init__)
STAGE_SETUP = ((64, 1, 1), (128, 2, 1), (256, 1, 2), (512, 1, 4))


def _make_stage(block, inplanes, planes, blocks, stride, dilation):
    """ADVENT `_make_layer`: a projection shortcut when the shape changes or the stage is dilated."""
    out = planes * block.expansion
    downsample = None
    if stride != 1 or inplanes != out or dilation in (2, 4):
        downsample = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride=stride, bias=False), _bn(out))
    layers = [block(inplanes, planes, stride, dilation, downsample)]
    layers += [block(out, planes, 1, dilation) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


def init_official(module):
    """ADVENT's init: every conv weight ~ N(0, 0.01) (biases keep PyTorch's), BN weight 1, bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, 0.01)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class DeepLabResNet(nn.Module):
    """ADVENT `ResNetMulti` trunk (conv1 .. layer4, output stride 8); forward gives layer4."""

    def __init__(self, name="resnet101"):
        super().__init__()
        if name not in DEPTHS:
            raise ValueError(f"unknown backbone '{name}' for DeepLab-v2; known: {', '.join(DEPTHS)} "
                             "(flag --backbone)")
        block, counts, width = DEPTHS[name]
        self.name = name
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = _bn(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
        inplanes = width
        for i, ((planes, stride, dilation), blocks) in enumerate(zip(STAGE_SETUP, counts)):
            planes = planes * width // 64
            setattr(self, f"layer{i + 1}", _make_stage(block, inplanes, planes, blocks, stride, dilation))
            inplanes = planes * block.expansion
        self.channels = inplanes  # C4: 2048 (Bottleneck) or 512 (BasicBlock)
        init_official(self)

    def forward(self, x):
        """(B, 3, H, W) -> layer4 features (B, C4, ~H/8, ~W/8) (ceil-mode pooling)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class AsppSum(nn.Module):
    """DeepLab-v2 classifier (ADVENT `ClassifierModule`): sum of four dilated 3x3 convs with bias."""

    def __init__(self, in_channels, num_classes, rates=ASPP_RATES):
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, 3, padding=r, dilation=r, bias=True) for r in rates)
        for conv in self.convs:
            nn.init.normal_(conv.weight, 0.0, 0.01)

    def forward(self, x):
        """sum_r conv_r(x): (B, C4, h, w) -> (B, num_classes, h, w)."""
        out = self.convs[0](x)
        for conv in self.convs[1:]:
            out = out + conv(x)
        return out


def build_deeplab_backbone(name="resnet101", freeze_bn_stats=False):
    """The trunk with frozen BN affine; `freeze_bn_stats` also fixes the running statistics."""
    trunk = DeepLabResNet(name)
    return freeze_bn(trunk) if freeze_bn_stats else trunk
