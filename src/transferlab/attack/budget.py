"""What an attack may do, and how its result is measured: the epsilon budget in [0, 1] pixels,
the method's defaults (:class:`AttackSpec`), 8-bit quantisation that stays inside the budget,
the success margin and the distortion of an adversarial image.

Every attack runs on :class:`~transferlab.models.classifier.ImageClassifier`, which takes [0, 1] RGB
and normalises inside; ``eps = 2/255`` therefore means "at most two 8-bit grey levels per
channel". That is the trap attack libraries are known for: feed them normalised tensors and the
same number silently means 2/255 x (1/std), a different and usually weaker attack.

The image that is saved is the image that is scored, so adversarial pixels are rounded to the
8-bit grid here (never leaving the eps ball) before anything is measured.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import TransferlabError
from ..options import AT_LEAST_ONE, Choice, OptionError

METHODS = ("fgsm", "pgd", "pgd-l2", "cw", "optimize")
LINF_METHODS = ("fgsm", "pgd")
DEFAULT_EPS = {"fgsm": 2 / 255, "pgd": 2 / 255, "pgd-l2": 0.5, "cw": None, "optimize": None}
DEFAULT_STEPS = {"fgsm": 1, "pgd": 20, "pgd-l2": 20, "cw": 100, "optimize": 100}


# --------------------------------------------------------------------------------------------
# Parsing and labels
# --------------------------------------------------------------------------------------------
def parse_eps(text: str | float | None) -> float | None:
    """``"4/255"``, ``"0.0157"``, ``"2/255"`` -> float; ``None``/``"none"`` -> None (no budget)."""
    if text is None or isinstance(text, (int, float)):
        return None if text is None else float(text)
    s = str(text).strip().lower()
    if s in ("", "none", "inf"):
        return None
    m = re.fullmatch(r"([0-9.]+(?:e-?\d+)?)\s*(?:/\s*([0-9.]+))?", s)
    if not m:
        raise TransferlabError(f"cannot read epsilon '{text}' (use e.g. 2/255 or 0.008)")
    try:
        v = float(m.group(1)) / (float(m.group(2)) if m.group(2) else 1.0)
    except (ValueError, ZeroDivisionError):
        raise TransferlabError(f"cannot read epsilon '{text}' (use e.g. 2/255 or 0.008)") from None
    if v < 0 or not math.isfinite(v):
        raise TransferlabError(f"epsilon must be >= 0, got '{text}'")
    return v


def parse_eps_list(text: str) -> list[float]:
    """``"0,1/255,2/255"`` -> sorted unique floats."""
    vals = [parse_eps(t) for t in str(text).split(",") if t.strip()]
    if not vals or any(v is None for v in vals):
        raise TransferlabError(f"cannot read epsilon list '{text}' (use e.g. 0,1/255,2/255,4/255)")
    return sorted(set(vals))  # type: ignore[arg-type]


def eps_label(eps: float | None) -> str:
    """2/255 for values on the 8-bit grid, else the number."""
    if eps is None:
        return "none"
    k = eps * 255
    return f"{round(k):g}/255" if abs(k - round(k)) < 1e-6 else f"{eps:.4g}"


# --------------------------------------------------------------------------------------------
# The spec: one object instead of a dozen loose parameters, filled with the method's defaults
# --------------------------------------------------------------------------------------------
@dataclass
class AttackSpec:
    """One attack's settings; every kernel in :mod:`transferlab.attack.methods` reads what it
    needs from it. Build it with :meth:`make`, which fills the method's defaults and validates."""

    method: str = "pgd"
    eps: float | None = 2 / 255
    steps: int = 20
    step_size: float | None = None
    targeted: bool = True
    seed: int = 0
    refine: int = 5  # extra 8-bit rounds for images the rounding un-fooled
    margin: float = 0.0  # refinement target margin (logits) on top of plain success
    early_stop: float | None = None  # PGD L-inf: stop updating an image past this margin
    random_start: bool = True  # PGD: start at a random point of the ball
    cw_c: float = 1.0
    cw_kappa: float = 1.0

    @classmethod
    def make(cls, method: str = "pgd", eps: float | str | None = "default", steps: int | None = None,
             step_size: float | str | None = None, **kw) -> AttackSpec:
        """Fill method defaults: eps 2/255 (L-inf), 0.5 (pgd-l2), none (cw, optimize);
        steps 20/20/100/100 (fgsm: 1); step size eps/4 (pgd), 2.5 eps/steps (pgd-l2),
        0.01 (cw, Adam lr), 1/255 (optimize, Adam lr)."""
        method = Choice(tuple(METHODS))("method", method)
        e = DEFAULT_EPS[method] if isinstance(eps, str) and eps == "default" else parse_eps(eps)
        if method in ("fgsm", "pgd", "pgd-l2") and e is None:
            raise OptionError("method", f"{method} needs an epsilon (e.g. {{eps}} 2/255)")
        if method == "cw":
            e = None  # C&W minimises the L2 distance itself; an eps does not apply
        n = 1 if method == "fgsm" else AT_LEAST_ONE("steps", steps or DEFAULT_STEPS[method])
        ss = parse_eps(step_size) if step_size is not None else None
        if ss is None:
            ss = {"fgsm": e, "pgd": (e or 0) / 4, "pgd-l2": 2.5 * (e or 0) / n, "cw": 0.01,
                  "optimize": 1 / 255}[method]
        refine = kw.pop("refine", 0 if method == "fgsm" else 5)
        return cls(method=method, eps=e, steps=n, step_size=ss, refine=refine, **kw)

    @property
    def linf_budget(self) -> float | None:
        """Budget that 8-bit rounding must respect (L-inf methods, and optimize with --eps)."""
        return self.eps if self.method in LINF_METHODS or self.method == "optimize" else None


# --------------------------------------------------------------------------------------------
# 8-bit quantisation and measures
# --------------------------------------------------------------------------------------------
def quantize(x_adv: torch.Tensor, x: torch.Tensor, linf: float | None = None) -> torch.Tensor:
    """Round to the 8-bit grid. With an L-inf budget, clamp to the grid points inside the ball
    around ``x`` (so eps = 0.01 never becomes 3/255 after rounding)."""
    q = torch.round(x_adv * 255)
    if linf is not None:
        lo = torch.ceil((x - linf) * 255 - 1e-4).clamp(0, 255)
        hi = torch.floor((x + linf) * 255 + 1e-4).clamp(0, 255)
        q = torch.min(torch.max(q, lo), hi)
    return q.clamp(0, 255) / 255


def margin(logits: torch.Tensor, y: torch.Tensor, targeted: bool) -> torch.Tensor:
    """> 0 exactly when the attack succeeds: targeted z_t - max_{j!=t} z_j, untargeted
    max_{j!=y} z_j - z_y."""
    zy = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.clone()
    other.scatter_(1, y[:, None], -torch.inf)
    best_other = other.max(1).values
    return zy - best_other if targeted else best_other - zy


def distortion(x_adv: torch.Tensor, x: torch.Tensor) -> dict[str, np.ndarray]:
    """Per image: L-inf and L2 in [0, 1] pixel units (also x255 = 8-bit levels), and PSNR (dB)."""
    d = (x_adv - x).flatten(1).double()
    linf = d.abs().max(1).values
    l2 = d.norm(dim=1)
    mse = d.pow(2).mean(1)
    psnr = torch.where(mse > 0, 10 * torch.log10(1.0 / mse.clamp_min(1e-20)), torch.full_like(mse, torch.inf))
    return {"linf": linf.cpu().numpy(), "l2": l2.cpu().numpy(), "psnr": psnr.cpu().numpy()}
