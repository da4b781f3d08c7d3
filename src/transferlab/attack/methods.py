"""Adversarial examples in [0, 1] pixel space, so an epsilon means pixels.

Every attack runs on :class:`~transferlab.models.classifier.ImageClassifier`, which takes [0, 1] RGB and
normalises inside; ``eps = 2/255`` therefore means "at most two 8-bit grey levels per channel".
That is the trap attack libraries are known for: feed them normalised tensors and the same
number silently means 2/255 x (1/std), a different and usually weaker attack.

The attacks, written directly in torch (short, well specified, no dependency):

* ``fgsm``     Goodfellow, Shlens & Szegedy, "Explaining and Harnessing Adversarial Examples",
               ICLR 2015: one signed-gradient step of size eps.
* ``pgd``      Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks",
               ICLR 2018: random start in the L-inf ball, signed steps, projection after each.
* ``pgd-l2``   the same with L2-normalised steps and projection onto the L2 ball.
* ``cw``       Carlini & Wagner, "Towards Evaluating the Robustness of Neural Networks", S&P 2017:
               L2 attack in tanh space, Adam on ||delta||^2 + c * max(margin, -kappa).
* ``optimize`` the lesson's unconstrained descent: cross-entropy toward the target, pixels only
               clipped to [0, 1] (Adam). For comparison: no budget, larger perturbations.

The image that is saved is the image that is scored: adversarial pixels are rounded to the 8-bit
grid (never leaving the eps ball), scored the way ``transferlab classify`` scores a file, and
images that the rounding un-fooled get a few more steps on the rounded image. A single-image
attack finally re-reads the saved PNG through the normal prediction path. An attack that still
fails is reported as a failure.

The attacked input is the *preprocessed* image (resize + centre crop to the model's input size):
the saved PNG is at input size, and :meth:`DataConfig.preprocess` passes such an image through
untouched, so the perturbation reaches the model bit for bit.
"""

from __future__ import annotations

import copy
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data.images import save_png
from ..data.loader import load_image, to_uint8
from ..errors import TransferlabError, UnknownClass
from ..report.text import _db, attack_lines

METHODS = ("fgsm", "pgd", "pgd-l2", "cw", "optimize")
LINF_METHODS = ("fgsm", "pgd")
DEFAULT_EPS = {"fgsm": 2 / 255, "pgd": 2 / 255, "pgd-l2": 0.5, "cw": None, "optimize": None}
DEFAULT_STEPS = {"fgsm": 1, "pgd": 20, "pgd-l2": 20, "cw": 100, "optimize": 100}


# --------------------------------------------------------------------------------------------
# Parsing
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
# Model evaluation: gradients (fast) and scoring (as `classify` does it)
# --------------------------------------------------------------------------------------------
class _Net:
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

    def logits_grad(self, x: torch.Tensor, loss_fn) -> tuple[torch.Tensor, torch.Tensor]:
        """(d loss / d x, logits) for a batch; ``loss_fn(logits) -> [b]`` per-image losses."""
        x = x.detach().requires_grad_(True)
        with self._autocast():
            logits = self.model(x)
        logits = logits.float()
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


def margin(logits: torch.Tensor, y: torch.Tensor, targeted: bool) -> torch.Tensor:
    """> 0 exactly when the attack succeeds: targeted z_t - max_{j!=t} z_j, untargeted
    max_{j!=y} z_j - z_y."""
    zy = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.clone()
    other.scatter_(1, y[:, None], -torch.inf)
    best_other = other.max(1).values
    return zy - best_other if targeted else best_other - zy


def _ce_objective(y: torch.Tensor, targeted: bool):
    """Loss to *ascend*: -CE(target) (targeted) or CE(true/original class) (untargeted)."""

    def f(logits):
        ce = F.cross_entropy(logits, y, reduction="none")
        return -ce if targeted else ce

    return f


# --------------------------------------------------------------------------------------------
# The attacks (batched; x in [0, 1], y = target class if targeted else the class to move away from)
# --------------------------------------------------------------------------------------------
def _project_linf(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)


def _l2(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)


def _project_l2(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    d = x_adv - x
    d = d * torch.clamp(eps / _l2(d), max=1.0)
    return (x + d).clamp(0, 1)


def fgsm(net: _Net, x, y, eps: float, targeted: bool) -> torch.Tensor:
    """Goodfellow et al. 2015: x + eps * sign(grad)."""
    g, _ = net.logits_grad(x, _ce_objective(y, targeted))
    return (x + eps * g.sign()).clamp(0, 1)


def pgd_linf(net: _Net, x, y, eps: float, steps: int, step_size: float, targeted: bool,
             gen: torch.Generator | None = None, random_start: bool = True, early_stop: float | None = None,
             on_step=None) -> torch.Tensor:
    """Madry et al. 2018, L-inf: uniform random start, signed steps, projection onto the ball.

    ``early_stop``: stop updating an image once its margin exceeds this value (saves work in
    robustness curves; off for single-image attacks, which run all steps)."""
    obj = _ce_objective(y, targeted)
    x_adv = x.clone()
    if random_start and eps > 0:
        noise = (torch.rand(x.shape, generator=gen) * 2 - 1).to(x.device) * eps
        x_adv = (x + noise).clamp(0, 1)
    active = torch.arange(len(x), device=x.device)
    for _ in range(steps):
        g, logits = net.logits_grad(x_adv[active], _obj_subset(obj, y, active, targeted))
        if early_stop is not None:
            keep = margin(logits, y[active], targeted) <= early_stop
            g, active = g[keep], active[keep]
            if len(active) == 0:
                break
        upd = x_adv[active] + step_size * g.sign()
        x_adv[active] = _project_linf(upd, x[active], eps)
        if on_step:
            on_step()
    return x_adv


def _obj_subset(obj, y, active, targeted):
    ya = y[active]
    return _ce_objective(ya, targeted) if len(active) != len(y) else obj


def pgd_l2(net: _Net, x, y, eps: float, steps: int, step_size: float, targeted: bool,
           gen: torch.Generator | None = None, random_start: bool = True, on_step=None) -> torch.Tensor:
    """Madry et al. 2018, L2: random start in the ball, L2-normalised steps, projection."""
    obj = _ce_objective(y, targeted)
    x_adv = x.clone()
    if random_start and eps > 0:
        d = torch.randn(x.shape, generator=gen).to(x.device)
        r = torch.rand(len(x), generator=gen).to(x.device).view(-1, 1, 1, 1)
        x_adv = _project_l2(x + d / _l2(d) * eps * r, x, eps)
    for _ in range(steps):
        g, _ = net.logits_grad(x_adv, obj)
        x_adv = _project_l2(x_adv + step_size * g / _l2(g), x, eps)
        if on_step:
            on_step()
    return x_adv


def cw_l2(net: _Net, x, y, targeted: bool, steps: int = 100, lr: float = 0.01, c: float = 1.0,
          kappa: float = 1.0, on_step=None) -> torch.Tensor:
    """Carlini & Wagner 2017, L2 with a fixed constant ``c`` (no binary search, for speed):
    x' = (tanh(w) + 1) / 2, minimise ||x' - x||^2 + c * max(margin_fail, -kappa). Keeps, per
    image, the smallest perturbation that reached margin >= kappa (else the last iterate)."""
    xc = x.clamp(1e-6, 1 - 1e-6)
    w = torch.atanh(xc * 2 - 1).detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([w], lr=lr)
    best = x.clone()
    best_l2 = torch.full((len(x),), torch.inf, device=x.device)
    last = x.clone()
    for _ in range(steps):
        x_adv = (torch.tanh(w) + 1) / 2
        with net._autocast():
            logits = net.model(x_adv)
        logits = logits.float()
        m = margin(logits, y, targeted)
        dist = (x_adv - x).flatten(1).pow(2).sum(1)
        loss = (dist + c * torch.clamp(-m, min=-kappa)).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            ok = (m >= kappa) & (dist.sqrt() < best_l2)
            best[ok] = x_adv.detach()[ok]
            best_l2[ok] = dist.sqrt()[ok]
            last = x_adv.detach()
        if on_step:
            on_step()
    found = torch.isfinite(best_l2).view(-1, 1, 1, 1)
    return torch.where(found, best, last).clamp(0, 1)


def optimize(net: _Net, x, y, targeted: bool, steps: int = 100, lr: float = 1 / 255,
             on_step=None) -> torch.Tensor:
    """The lesson's attack: gradient descent (Adam) on the pixels of cross-entropy toward the
    target (or ascent away from the class), no budget, pixels clipped to [0, 1]."""
    obj = _ce_objective(y, targeted)
    p = x.clone().requires_grad_(True)
    opt = torch.optim.Adam([p], lr=lr)
    for _ in range(steps):
        with net._autocast():
            logits = net.model(p)
        loss = -obj(logits.float()).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            p.clamp_(0, 1)
        if on_step:
            on_step()
    return p.detach()


# --------------------------------------------------------------------------------------------
# 8-bit quantisation that respects the budget
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


# --------------------------------------------------------------------------------------------
# One batched entry point
# --------------------------------------------------------------------------------------------
@dataclass
class AttackSpec:
    method: str = "pgd"
    eps: float | None = 2 / 255
    steps: int = 20
    step_size: float | None = None
    targeted: bool = True
    seed: int = 0
    refine: int = 5  # extra 8-bit rounds for images the rounding un-fooled
    margin: float = 0.0  # refinement target margin (logits) on top of plain success
    early_stop: float | None = None
    cw_c: float = 1.0
    cw_kappa: float = 1.0

    @classmethod
    def make(cls, method: str = "pgd", eps: float | str | None = "default", steps: int | None = None,
             step_size: float | str | None = None, **kw) -> AttackSpec:
        """Fill method defaults: eps 2/255 (L-inf), 0.5 (pgd-l2), none (cw, optimize);
        steps 20/20/100/100 (fgsm: 1); step size eps/4 (pgd), 2.5 eps/steps (pgd-l2),
        0.01 (cw, Adam lr), 1/255 (optimize, Adam lr)."""
        if method not in METHODS:
            raise TransferlabError(f"unknown attack method '{method}' (choose from {', '.join(METHODS)})")
        e = DEFAULT_EPS[method] if isinstance(eps, str) and eps == "default" else parse_eps(eps)
        if method in ("fgsm", "pgd", "pgd-l2") and e is None:
            raise TransferlabError(f"--method {method} needs an epsilon (e.g. --eps 2/255)")
        if method == "cw":
            e = None  # C&W minimises the L2 distance itself; an eps does not apply
        n = 1 if method == "fgsm" else int(steps or DEFAULT_STEPS[method])
        if n < 1:
            raise TransferlabError("--steps must be >= 1")
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


@dataclass
class AttackOutput:
    x_adv: torch.Tensor  # [b, 3, S, S] on the 8-bit grid
    logits_clean: torch.Tensor
    logits_adv: torch.Tensor
    success: torch.Tensor  # bool [b], measured on x_adv (after rounding)
    refined: int  # images that needed extra rounds after rounding


def run_attack(net: _Net, x: torch.Tensor, y: torch.Tensor, spec: AttackSpec, on_step=None,
               logits_clean: torch.Tensor | None = None) -> AttackOutput:
    """Attack a batch, round to 8 bits, refine what rounding broke, score as `classify` would."""
    x = x.to(net.device)
    y = y.to(net.device)
    gen = torch.Generator().manual_seed(spec.seed)
    torch.manual_seed(spec.seed)
    if logits_clean is None:
        logits_clean = net.score(x)
    m, t = spec.method, spec.targeted
    if m == "fgsm":
        xa = fgsm(net, x, y, spec.eps, t)
    elif m == "pgd":
        xa = pgd_linf(net, x, y, spec.eps, spec.steps, spec.step_size, t, gen, early_stop=spec.early_stop,
                      on_step=on_step)
    elif m == "pgd-l2":
        xa = pgd_l2(net, x, y, spec.eps, spec.steps, spec.step_size, t, gen, on_step=on_step)
    elif m == "cw":
        xa = cw_l2(net, x, y, t, spec.steps, spec.step_size, spec.cw_c, spec.cw_kappa, on_step=on_step)
    else:
        xa = optimize(net, x, y, t, spec.steps, spec.step_size, on_step=on_step)
        if spec.eps is not None:
            xa = _project_linf(xa, x, spec.eps)
    xq = quantize(xa, x, spec.linf_budget)
    logits = net.score(xq)
    refined = 0
    for _ in range(spec.refine if spec.eps != 0 else 0):  # a zero budget cannot be refined
        need = (margin(logits, y, t) <= spec.margin).nonzero().flatten()
        if len(need) == 0:
            break
        refined = max(refined, len(need))
        xq[need] = _refine(net, xq[need], x[need], y[need], spec)
        logits[need] = net.score(xq[need])
    success = margin(logits, y, t) > 0
    return AttackOutput(xq, logits_clean, logits, success, refined)


def _refine(net: _Net, xq, x, y, spec: AttackSpec, steps: int = 3) -> torch.Tensor:
    """A few steps on the rounded image: signed 1/255 steps stay on the 8-bit grid (L-inf
    methods), L2 steps are projected and re-rounded (pgd-l2), cw/optimize take 1/255 signed steps."""
    obj = _ce_objective(y, spec.targeted)
    for _ in range(steps):
        g, _ = net.logits_grad(xq, obj)
        if spec.method == "pgd-l2":
            step = max(spec.step_size or 0, 1 / 255)
            xq = _project_l2(xq + step * g / _l2(g), x, spec.eps)
        else:
            xq = xq + g.sign() / 255
            xq = _project_linf(xq, x, spec.linf_budget) if spec.linf_budget is not None else xq.clamp(0, 1)
        xq = quantize(xq, x, spec.linf_budget)
    return xq


def distortion(x_adv: torch.Tensor, x: torch.Tensor) -> dict[str, np.ndarray]:
    """Per image: L-inf and L2 in [0, 1] pixel units (also x255 = 8-bit levels), and PSNR (dB)."""
    d = (x_adv - x).flatten(1).double()
    linf = d.abs().max(1).values
    l2 = d.norm(dim=1)
    mse = d.pow(2).mean(1)
    psnr = torch.where(mse > 0, 10 * torch.log10(1.0 / mse.clamp_min(1e-20)), torch.full_like(mse, torch.inf))
    return {"linf": linf.cpu().numpy(), "l2": l2.cpu().numpy(), "psnr": psnr.cpu().numpy()}


# --------------------------------------------------------------------------------------------
# Single-image API
# --------------------------------------------------------------------------------------------
def _top(probs: np.ndarray, classes: list[str], k: int = 3) -> list[list]:
    idx = np.argsort(-probs)[:k]
    return [[classes[i], float(probs[i])] for i in idx]


@dataclass
class _Outcome:
    """What one single-image attack produced, before it becomes the result dict."""

    x: torch.Tensor  # [1, 3, S, S] the photo as the model saw it
    xq: torch.Tensor  # the 8-bit adversarial image
    probs0: np.ndarray
    probs1: np.ndarray  # of the saved PNG when there is one
    orig: int
    tgt: int
    refined: bool
    seconds: float
    png: Path | None = None


def attack_image(image: str | Path, model="efficientnet_lite0", *, target: str | None = None,
                 transfer_to: str | None = None, out: str | Path | None = None,
                 figure: str | Path | bool | None = True, progress=False, **attack) -> dict:
    """Attack one photo; ``model`` is a backbone name, a run directory or a :class:`Run`.

    ``attack``: ``method`` (default pgd), ``eps`` (default: the method's), ``steps``,
    ``step_size``, ``seed`` (see :meth:`AttackSpec.make`). ``target=None`` means untargeted
    (move away from the model's own prediction). With ``out``, the adversarial PNG is saved at
    input size, re-read through the prediction path, and that re-read result is the one
    reported. ``figure=True`` puts ``<out>.figure.png`` next to it.
    """
    from ..run import Run, load

    run = model if isinstance(model, Run) else load(model)
    attack = {"method": "pgd", "eps": "default", **attack}
    spec = AttackSpec.make(**attack, targeted=target is not None, margin=0.5)
    net = _Net(run.model)
    o = _attack_one(run, net, load_image(image, run.data_config)[None], target, spec, progress)
    if out is not None:
        o.png = save_png(to_uint8(o.xq[0]), out)
        o.probs1 = run.predict_proba([o.png])[0]  # the saved file, read back as any photo: what we report
    result = _attack_result(run, image, spec, o, target is not None)
    if transfer_to:
        result["transfer"] = transfer(o.png, image, transfer_to, result["target"])
    if figure and o.png is not None:
        fig_path = Path(figure) if isinstance(figure, (str, Path)) else o.png.with_suffix(".figure.png")
        pert_probs = net.score(_amplified(o.xq - o.x)).softmax(1)[0].cpu().numpy()
        attack_figure(o.x[0], o.xq[0], o.probs0, pert_probs, o.probs1, run.classes, fig_path, result)
        result["figure"] = str(fig_path)
    return result


def _attack_one(run, net: _Net, x: torch.Tensor, target: str | None, spec: AttackSpec, progress) -> _Outcome:
    from ..progress import resolve

    t0 = time.perf_counter()
    logits0 = net.score(x)
    orig = int(logits0.argmax(1))
    tgt = run.class_index(target) if target is not None else orig
    with resolve(progress)(f"{spec.method} attack", spec.steps) as advance:
        res = run_attack(net, x, torch.tensor([tgt]), spec, on_step=advance, logits_clean=logits0)
    return _Outcome(x, res.x_adv.cpu(), logits0.softmax(1)[0].cpu().numpy(),
                    res.logits_adv.softmax(1)[0].cpu().numpy(), orig, tgt, res.refined > 0,
                    time.perf_counter() - t0)


def _attack_result(run, image, spec: AttackSpec, o: _Outcome, targeted: bool) -> dict:
    adv = int(np.argmax(o.probs1))
    dist = distortion(o.xq, o.x)
    return {
        "image": str(image), "model": run.name, "input_size": run.data_config.input_size, "method": spec.method,
        "targeted": targeted, "target": run.classes[o.tgt] if targeted else None,
        "eps": spec.eps, "eps_label": eps_label(spec.eps), "steps": spec.steps, "step_size": spec.step_size,
        "seed": spec.seed,
        "original": {"class": run.classes[o.orig], "prob": float(o.probs0[o.orig]),
                     "top": _top(o.probs0, run.classes)},
        "adversarial": {"class": run.classes[adv], "prob": float(o.probs1[adv]), "top": _top(o.probs1, run.classes),
                        "target_prob": float(o.probs1[o.tgt]) if targeted else None,
                        "original_class_prob": float(o.probs1[o.orig])},
        "success": bool(adv == o.tgt if targeted else adv != o.orig),
        "linf": float(dist["linf"][0]), "linf_255": float(dist["linf"][0] * 255), "l2": float(dist["l2"][0]),
        "psnr_db": float(dist["psnr"][0]) if np.isfinite(dist["psnr"][0]) else None,  # None: unchanged
        "refined": o.refined, "scored_from_saved_png": o.png is not None, "seconds": round(o.seconds, 3),
        "png": str(o.png) if o.png else None, "figure": None, "transfer": None,
    }


def transfer(png: Path | None, original: str | Path, spec: str, target_name: str | None) -> dict:
    """Score the saved adversarial PNG with another model through its normal prediction path.

    The PNG is at the attacked model's input size; a second model with another input size
    resizes and crops it like any photo. Targeted: success = the target class; untargeted:
    success = the second model changed its mind relative to the original photo."""
    from ..run import load

    if png is None:
        raise TransferlabError("--transfer-to needs --out (the saved PNG is what is transferred)")
    r2 = load(spec)
    probs = r2.predict_proba([png, original])
    pa, po = probs[0], probs[1]
    a, o = int(pa.argmax()), int(po.argmax())
    out = {"model": r2.name, "original": {"class": r2.classes[o], "prob": float(po[o])},
           "adversarial": {"class": r2.classes[a], "prob": float(pa[a])}}
    if target_name is not None:
        try:
            t2 = r2.class_index(target_name)
        except UnknownClass as e:
            raise UnknownClass(f"target '{target_name}' is not a class of {r2.name}: {e}") from None
        out["target_prob"] = float(pa[t2])
        out["success"] = a == t2
    else:
        out["success"] = a != o
    return out


def _amplification(delta: torch.Tensor) -> float:
    """Factor that maps the largest |delta| to 0.5 (0 for an unchanged image)."""
    m = float(delta.abs().max())
    return 0.5 / m if m > 0 else 0.0


def _amplified(delta: torch.Tensor) -> torch.Tensor:
    return (0.5 + delta * _amplification(delta)).clamp(0, 1)


def attack_figure(x, xq, probs0, probs_pert, probs1, classes, path, info: dict) -> Path:
    """original | perturbation (amplified, scale printed) | adversarial, each with top-3 bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..report.figures import save_figure

    delta = (xq - x).cpu()
    amp = _amplification(delta)
    panels = [
        (x, probs0, f"original\n{info['original']['class']} ({info['original']['prob']:.2f})"),
        (_amplified(delta), probs_pert,
         f"perturbation ×{amp:.0f}\nL∞ = {info['linf_255']:.1f}/255, L2 = {info['l2']:.2f}, "
         f"PSNR {_db(info['psnr_db'])}"),
        (xq, probs1, f"adversarial ({info['method']}, ε = {info['eps_label']})\n"
                     f"{info['adversarial']['class']} ({info['adversarial']['prob']:.2f})"
                     f" — {'success' if info['success'] else 'FAILED'}"),
    ]
    fig, axes = plt.subplots(2, 3, figsize=(12, 6.2), gridspec_kw={"height_ratios": [3, 1.1]})
    for j, (img, pr, title) in enumerate(panels):
        ax = axes[0, j]
        ax.imshow(img.permute(1, 2, 0).clamp(0, 1).numpy())
        ax.set_title(title, fontsize=9)
        ax.axis("off")
        top = _top(pr, classes)
        bx = axes[1, j]
        names = [n[:28] for n, _ in top][::-1]
        vals = [p for _, p in top][::-1]
        bx.barh(names, vals, color=["#888"] * 2 + ["#c33" if j == 2 else "#36c"])
        bx.set_xlim(0, 1)
        bx.tick_params(labelsize=8)
        if j == 1:
            bx.set_title("model on the amplified perturbation alone", fontsize=8)
    fig.suptitle(f"{info['model']}: {'targeted → ' + info['target'] if info['targeted'] else 'untargeted'}",
                 fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def demo_section(out_dir: Path, quiet: bool = True) -> dict:
    """For `transferlab demo`: chelsea → golden retriever, targeted PGD at ε = 2/255."""
    from PIL import Image
    from skimage import data

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    src = out_dir / "chelsea.png"
    Image.fromarray(data.chelsea()).save(src)
    r = attack_image(src, "efficientnet_lite0", target="golden retriever", method="pgd", eps=2 / 255,
                     out=out_dir / "chelsea_to_golden_retriever.png",
                     figure=out_dir / "attack_chelsea_golden_retriever.png", progress=not quiet)
    return {"title": "Adversarial example: chelsea → golden retriever (PGD, ε = 2/255)",
            "figures": [r["figure"]], "text": attack_lines(r), "result": r}
