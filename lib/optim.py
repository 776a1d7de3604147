"""SGD that updates some parameters several times per step: the optimizer the official DADA /
AdvEnt code actually ran (docs/reference.md, "DADA": "The backbone's learning rate").

ADVENT's `get_1x_lr_params_no_scale` (advent/model/deeplabv2.py, used by `optim_parameters`)
walks `module.modules()` of conv1, bn1, layer1..layer4 and yields every `parameters()` of each,
so a backbone parameter comes once per module on its path: conv1 once, a conv of a residual
block three times (layerN, the block, the conv), a downsample conv four times. torch.optim.SGD
updates a tensor listed k times k times per step, in list order. `RepeatedSGD` takes each
tensor once with its count (the group's "repeats") and applies the same sequence of updates
(PyTorch warns that duplicate tensors in a group will become an error, pytorch/pytorch#40967).

What k sequential updates do depends on the PyTorch version; two are reproduced ("semantics"):

- "torch1.2": PyTorch 1.2's SGD.step, the version the official Dockerfile pins
  (valeoai/DADA Dockerfile: pytorch=1.2.0; ADVENT's pins 0.4.1, whose SGD steps a duplicated
  group the same way): every version the official code names, so very likely what produced
  the paper's numbers. The weight
  decay is added into p.grad in place (`d_p = p.grad.data; d_p.add_(weight_decay, p.data)`,
  quoted in pytorch/pytorch#12218), so the i-th occurrence steps with g + wd (w_1 + ... + w_i);
  the momentum buffer sits in self.state[p] and is shared by every occurrence from the first
  step on.
- "torch2": torch.optim.SGD(foreach=False) of PyTorch 2.x (`_single_tensor_sgd`): the decay is
  added out of place (g + wd w_i); the buffers are read from the state before the loop, so on
  the first step each occurrence starts a buffer of its own (the last one is kept), and later
  steps share it.

PyTorch 2's default on CUDA (foreach) scales the shared buffer k times before adding, a third
result, not reproduced here. For k = 1 every variant is plain SGD.
"""
import torch

SEMANTICS = ("torch1.2", "torch2")


class RepeatedSGD(torch.optim.Optimizer):
    """SGD (momentum, weight decay) with a per-parameter count of sequential updates per step:
    the official DADA / AdvEnt backbone group without duplicate tensors (module docstring).

    Each param group may hold "repeats", one int >= 1 per parameter (default 1)."""

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0, semantics="torch1.2"):
        if semantics not in SEMANTICS:
            raise ValueError(f"semantics must be one of {', '.join(SEMANTICS)}, got {semantics!r}")
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(f"lr, momentum and weight_decay must be >= 0, got {lr}, {momentum}, {weight_decay}")
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                                      semantics=semantics))

    def add_param_group(self, param_group):
        """torch's add_param_group, then "repeats" checked (one count >= 1 per parameter)."""
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        repeats = [int(k) for k in group.setdefault("repeats", [1] * len(group["params"]))]
        if len(repeats) != len(group["params"]) or min(repeats, default=1) < 1:
            raise ValueError(f"a group's repeats must give one count >= 1 per parameter: "
                             f"{len(repeats)} counts for {len(group['params'])} parameters")
        group["repeats"] = repeats

    @torch.no_grad()
    def step(self, closure=None):
        """One step: every parameter with a gradient updated `repeats` times in a row, as SGD
        steps the official (ADVENT optim_parameters) group that lists it that often."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            update = _steps_torch12 if group["semantics"] == "torch1.2" else _steps_torch2
            for p, k in zip(group["params"], group["repeats"]):
                if p.grad is not None:
                    update(p, p.grad, self.state[p], k, group["lr"], group["momentum"], group["weight_decay"])
        return loss


def _steps_torch12(p, grad, state, k, lr, momentum, weight_decay):
    """k updates of p as PyTorch 1.2's SGD.step makes them for a tensor listed k times."""
    d = grad.clone()   # 1.2 accumulated the decay into p.grad itself: same weights, .grad kept
    for _ in range(k):
        if weight_decay != 0:
            d.add_(p, alpha=weight_decay)
        step = d
        if momentum != 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = d.clone()
            else:
                buf.mul_(momentum).add_(d)
            step = buf
        p.add_(step, alpha=-lr)


def _steps_torch2(p, grad, state, k, lr, momentum, weight_decay):
    """k updates of p as PyTorch 2's torch.optim.SGD(foreach=False) makes them for a tensor listed k times."""
    bufs = [state.get("momentum_buffer")] * k     # read before the loop, as _init_group does
    for i in range(k):
        step = grad.add(p, alpha=weight_decay) if weight_decay != 0 else grad
        if momentum != 0:
            if bufs[i] is None:
                bufs[i] = step.detach().clone()
            else:
                bufs[i].mul_(momentum).add_(step)
            step = bufs[i]
        p.add_(step, alpha=-lr)
    if momentum != 0:
        state["momentum_buffer"] = bufs[-1]
