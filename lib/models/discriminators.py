"""Discriminators (critics) shared by the adversarial variants of the methods."""
import torch.nn as nn


class FeatureCritic(nn.Module):
    """Per-location domain critic on encoder features, for AT/DT Table 7's "Adversarial" E1
    alignment (the paper gives no architecture: conv 3x3 C->256->128 with LeakyReLU 0.2, then
    a 1x1 conv to one logit per location, at the features' resolution)."""

    def __init__(self, in_channels, width=256):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(width, width // 2, 3, padding=1), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(width // 2, 1, 1))

    def forward(self, feat):
        return self.net(feat)


class OutputDiscriminator(nn.Sequential):
    """ADVENT / DADA's fully convolutional discriminator on output-space maps (DADA Sec. 3.2 and
    4.1, "DCGAN's discriminator"; official get_fc_discriminator): 4x4 stride-2 convs
    C->64->128->256->512->1, LeakyReLU 0.2 after the first four, one logit per output location."""

    def __init__(self, in_channels, width=64):
        chans = [in_channels, width, width * 2, width * 4, width * 8]
        mods = []
        for cin, cout in zip(chans[:-1], chans[1:]):
            mods += [nn.Conv2d(cin, cout, 4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True)]
        mods.append(nn.Conv2d(chans[-1], 1, 4, stride=2, padding=1))
        super().__init__(*mods)
