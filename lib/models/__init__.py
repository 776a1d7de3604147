"""Model registry: checkpoints store a JSON spec so any model can be rebuilt without its script.

    spec = model_spec("encdec", backbone="resnet50", tasks={"semantic": 11})
    model = build_model(spec)            # same spec -> same architecture

Method modules add their own architectures to `MODELS` (a plain dict, name -> class).
"""

import json

import torch.nn as nn

from .backbones import build_backbone, freeze_bn, ResNetBackbone
from .decoders import UpsampleDecoder, to_depth, to_edges, to_normals, to_prediction
from .dada import DadaNet
from .encdec import EncDecNet
from .headfreeze import HeadFreezeNet
from .semimtl import SemiMtlNet
from .transfer import AtdtNet, TransferNet
from .umadapt import UMAdaptNet

MODELS = {"encdec": EncDecNet, "atdt": AtdtNet, "dada": DadaNet, "semimtl": SemiMtlNet,
          "umadapt": UMAdaptNet, "headfreeze": HeadFreezeNet}


class RawOutputs(nn.Module):
    """A network's training outputs (its `forward_raw`) as a module's forward, so DDP sees
    every training pass of the method scripts; the network's own forward is for inference."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, *args):
        return self.net.forward_raw(*args)


def _check_arch(arch):
    if arch not in MODELS:
        raise ValueError(f"unknown model arch '{arch}'; known: {', '.join(sorted(MODELS))}")


def model_spec(arch: str, **kwargs) -> dict:
    """{"arch": arch, "kwargs": kwargs}, round-tripped through JSON so it equals what a checkpoint reloads."""
    _check_arch(arch)
    try:
        return json.loads(json.dumps({"arch": arch, "kwargs": kwargs}))
    except TypeError as err:
        raise ValueError(f"model_spec('{arch}') kwargs must be JSON-serialisable: {err}") from err


def build_model(spec: dict) -> nn.Module:
    """Instantiate MODELS[spec["arch"]](**spec["kwargs"])."""
    if not isinstance(spec, dict) or "arch" not in spec:
        raise ValueError(f"a model spec is a dict with 'arch' and 'kwargs', got {spec!r}")
    _check_arch(spec["arch"])
    kwargs = spec.get("kwargs") or {}
    try:
        return MODELS[spec["arch"]](**kwargs)
    except TypeError as err:
        raise TypeError(f"model arch '{spec['arch']}' rejected kwargs {sorted(kwargs)}: {err}") from err


__all__ = [
    "MODELS", "build_model", "model_spec", "EncDecNet", "DadaNet", "ResNetBackbone", "build_backbone",
    "freeze_bn", "UpsampleDecoder", "AtdtNet", "TransferNet", "to_depth", "to_normals", "to_edges", "to_prediction",
]
