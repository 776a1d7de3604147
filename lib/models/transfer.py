"""AT/DT's transfer network G(1->2) and the composed inference model D2(G(E1(x))).

G (AT/DT Sec. 4 "Architecture"): "6 pairs of convolutional and batch normalization layers
with kernel size 3x3 which do not perform any downsampling or upsampling". The paper does
not name the activations or widths; here a ReLU follows each pair (the last one only with
final_relu, which train_transfer.py turns on: E2's layer4 features are post-ReLU) and the
hidden width defaults to E2's channel count.
"""
import torch.nn as nn

from .encdec import EncDecNet, decode


class TransferNet(nn.Sequential):
    """G(1->2): `layers` x (conv 3x3 + BN), ReLU between pairs, same spatial size (Sec. 4)."""

    def __init__(self, in_channels, out_channels, width=None, layers=6, final_relu=False):
        width = width or out_channels
        mods, ch = [], in_channels
        for i in range(layers):
            last = i == layers - 1
            out = out_channels if last else width
            mods += [nn.Conv2d(ch, out, 3, padding=1, bias=False), nn.BatchNorm2d(out)]
            if not last or final_relu:
                mods.append(nn.ReLU(inplace=True))
            ch = out
        super().__init__(*mods)


class AtdtNet(nn.Module):
    """Inference model of AT/DT, eq. 2: y2 = D2(G(E1(x))), returning N2's prediction dict.

    Built from the specs of N1 and N2 (EncDecNet kwargs) so evaluate.py can rebuild it from a
    train_transfer.py checkpoint; only N1's encoder and N2's decoder are kept.
    """

    def __init__(self, n1, n2, transfer):
        super().__init__()
        net1, net2 = EncDecNet(**n1), EncDecNet(**n2)
        self.encoder = net1.backbone            # E1
        self.decoders = net2.decoders           # D2 (one decoder: task T2)
        self.transfer = TransferNet(**transfer)  # G(1->2)
        self.depth_scale, self.depth_focal = net2.depth_scale, net2.depth_focal   # D2's convention

    def forward(self, x):
        feat = self.transfer(self.encoder(x)["layer4"])
        return decode(self.decoders, feat, x.shape[-2:], self.depth_scale)
