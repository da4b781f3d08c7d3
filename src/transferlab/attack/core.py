"""One batched entry point for every attack: run the kernel, round to 8 bits, refine what the
rounding un-fooled, score the rounded images the way ``transferlab classify`` does.

The model is wrapped twice (:class:`AttackNet`): a private contiguous copy for gradients, and a
scorer that reproduces the prediction path, so "success" means what a user would see.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from .budget import AttackSpec, margin, quantize
from .methods import KERNELS, ce_objective, l2_norm, project_l2, project_linf

__all__ = ["AttackNet", "AttackOutput", "AttackSpec", "refine", "run_attack"]


class AttackNet:
    """The classifier twice: a private contiguous fp32/bf16 copy for gradients, and a scorer that
    reproduces the prediction path (channels_last, autocast features, fp32 head)."""

    def __init__(self, model, device: torch.device | None = None):
        from ..runtime.device import default_device

        self.device = device or default_device()
        self.model = copy.deepcopy(model).to(self.device).to(memory_format=torch.contiguous_format).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def _autocast(self):
        from ..runtime.device import autocast

        return autocast(self.device)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable fp32 logits of ``x`` (the optimisers of C&W and ``optimize``)."""
        with self._autocast():
            return self.model(x).float()

    def logits_grad(self, x: torch.Tensor, loss_fn) -> tuple[torch.Tensor, torch.Tensor]:
        """(d loss / d x, logits) for a batch; ``loss_fn(logits) -> [b]`` per-image losses."""
        x = x.detach().requires_grad_(True)
        logits = self.logits(x)
        (g,) = torch.autograd.grad(loss_fn(logits).sum(), x)
        return g, logits.detach()

    @torch.no_grad()
    def score(self, x: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
        """Logits [b, k] computed like ``Run.predict_proba`` (what `transferlab classify` sees)."""
        outs = []
        for s in range(0, len(x), batch_size):
            xb = x[s : s + batch_size].to(self.device).contiguous(memory_format=torch.channels_last)
            with self._autocast():
                f = self.model.features(xb)
            outs.append(self.model.head(f.float()).float())
        return torch.cat(outs) if outs else torch.zeros(0)


@dataclass
class AttackOutput:
    x_adv: torch.Tensor  # [b, 3, S, S] on the 8-bit grid
    logits_clean: torch.Tensor
    logits_adv: torch.Tensor
    success: torch.Tensor  # bool [b], measured on x_adv (after rounding)
    refined: int  # images that needed extra rounds after rounding


def run_attack(net: AttackNet, x: torch.Tensor, y: torch.Tensor, spec: AttackSpec, on_step=None,
               logits_clean: torch.Tensor | None = None) -> AttackOutput:
    """Attack a batch, round to 8 bits, refine what rounding broke, score as `classify` would."""
    x, y = x.to(net.device), y.to(net.device)
    gen = torch.Generator().manual_seed(spec.seed)
    torch.manual_seed(spec.seed)
    if logits_clean is None:
        logits_clean = net.score(x)
    xa = KERNELS[spec.method](net, x, y, spec, gen=gen, on_step=on_step)
    xq = quantize(xa, x, spec.linf_budget)
    logits = net.score(xq)
    refined = 0
    for _ in range(spec.refine if spec.eps != 0 else 0):  # a zero budget cannot be refined
        need = (margin(logits, y, spec.targeted) <= spec.margin).nonzero().flatten()
        if len(need) == 0:
            break
        refined = max(refined, len(need))
        xq[need] = refine(net, xq[need], x[need], y[need], spec)
        logits[need] = net.score(xq[need])
    success = margin(logits, y, spec.targeted) > 0
    return AttackOutput(xq, logits_clean, logits, success, refined)


def refine(net: AttackNet, xq, x, y, spec: AttackSpec, steps: int = 3) -> torch.Tensor:
    """A few steps on the rounded image: signed 1/255 steps stay on the 8-bit grid (L-inf
    methods), L2 steps are projected and re-rounded (pgd-l2), cw/optimize take 1/255 signed steps."""
    obj = ce_objective(y, spec.targeted)
    for _ in range(steps):
        g, _ = net.logits_grad(xq, obj)
        if spec.method == "pgd-l2":
            step = max(spec.step_size or 0, 1 / 255)
            xq = project_l2(xq + step * g / l2_norm(g), x, spec.eps)
        else:
            xq = xq + g.sign() / 255
            xq = project_linf(xq, x, spec.linf_budget) if spec.linf_budget is not None else xq.clamp(0, 1)
        xq = quantize(xq, x, spec.linf_budget)
    return xq
