"""The attack algorithms, batched, in [0, 1] pixel space, written directly in torch (short, well
specified, no dependency). Each kernel is ``kernel(net, x, y, spec, *, gen, on_step)``:

* ``x`` [b, 3, S, S] in [0, 1]; ``y`` the target class (``spec.targeted``) or the class to move
  away from; ``spec`` an :class:`~transferlab.attack.budget.AttackSpec` (budget, steps, step size);
* ``net`` the model wrapper of :mod:`transferlab.attack.core`: ``net.logits_grad(x, loss_fn)``
  gives the input gradient, ``net.logits(x)`` differentiable logits;
* ``gen`` seeds random starts, ``on_step()`` is called after every step (progress bars).

They return the adversarial batch in [0, 1], not yet rounded to 8 bits (that is
:func:`transferlab.attack.core.run_attack`'s job).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .budget import AttackSpec, margin


def ce_objective(y: torch.Tensor, targeted: bool):
    """Loss to *ascend*: -CE(target) (targeted) or CE(true/original class) (untargeted)."""

    def f(logits):
        ce = F.cross_entropy(logits, y, reduction="none")
        return -ce if targeted else ce

    return f


def project_linf(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)


def l2_norm(t: torch.Tensor) -> torch.Tensor:
    """Per-image L2 norm, shaped to broadcast over [b, 3, S, S] (never 0)."""
    return t.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)


def project_l2(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    d = x_adv - x
    d = d * torch.clamp(eps / l2_norm(d), max=1.0)
    return (x + d).clamp(0, 1)


def fgsm(net, x, y, spec: AttackSpec, *, gen=None, on_step=None) -> torch.Tensor:
    """Goodfellow, Shlens & Szegedy, "Explaining and Harnessing Adversarial Examples", ICLR 2015:
    one signed-gradient step of size eps, ``x + eps * sign(grad)``."""
    g, _ = net.logits_grad(x, ce_objective(y, spec.targeted))
    if on_step:
        on_step()
    return (x + spec.eps * g.sign()).clamp(0, 1)


def pgd_linf(net, x, y, spec: AttackSpec, *, gen: torch.Generator | None = None, on_step=None) -> torch.Tensor:
    """Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks", ICLR 2018,
    L-inf: uniform random start in the ball, signed steps, projection onto the ball after each.

    ``spec.early_stop``: stop updating an image once its margin exceeds this value (saves work in
    robustness curves; off for single-image attacks, which run all steps)."""
    eps, x_adv = spec.eps, x.clone()
    if spec.random_start and eps > 0:
        noise = (torch.rand(x.shape, generator=gen) * 2 - 1).to(x.device) * eps
        x_adv = (x + noise).clamp(0, 1)
    active = torch.arange(len(x), device=x.device)
    for _ in range(spec.steps):
        g, logits = net.logits_grad(x_adv[active], ce_objective(y[active], spec.targeted))
        if spec.early_stop is not None:
            keep = margin(logits, y[active], spec.targeted) <= spec.early_stop
            g, active = g[keep], active[keep]
            if len(active) == 0:
                break
        upd = x_adv[active] + spec.step_size * g.sign()
        x_adv[active] = project_linf(upd, x[active], eps)
        if on_step:
            on_step()
    return x_adv


def pgd_l2(net, x, y, spec: AttackSpec, *, gen: torch.Generator | None = None, on_step=None) -> torch.Tensor:
    """Madry et al. 2018 (as :func:`pgd_linf`), L2: random start in the L2 ball, L2-normalised
    steps, projection onto the L2 ball."""
    eps, obj, x_adv = spec.eps, ce_objective(y, spec.targeted), x.clone()
    if spec.random_start and eps > 0:
        d = torch.randn(x.shape, generator=gen).to(x.device)
        r = torch.rand(len(x), generator=gen).to(x.device).view(-1, 1, 1, 1)
        x_adv = project_l2(x + d / l2_norm(d) * eps * r, x, eps)
    for _ in range(spec.steps):
        g, _ = net.logits_grad(x_adv, obj)
        x_adv = project_l2(x_adv + spec.step_size * g / l2_norm(g), x, eps)
        if on_step:
            on_step()
    return x_adv


def cw_l2(net, x, y, spec: AttackSpec, *, gen=None, on_step=None) -> torch.Tensor:
    """Carlini & Wagner, "Towards Evaluating the Robustness of Neural Networks", IEEE S&P 2017, L2
    with a fixed constant ``spec.cw_c`` (no binary search, for speed): x' = (tanh(w) + 1) / 2,
    Adam (lr ``spec.step_size``) on ||x' - x||^2 + c * max(-margin, -kappa). Keeps, per image, the
    smallest perturbation that reached margin >= kappa (else the last iterate)."""
    kappa = spec.cw_kappa
    w = torch.atanh(x.clamp(1e-6, 1 - 1e-6) * 2 - 1).detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([w], lr=spec.step_size)
    best, last = x.clone(), x.clone()
    best_l2 = torch.full((len(x),), torch.inf, device=x.device)
    for _ in range(spec.steps):
        x_adv = (torch.tanh(w) + 1) / 2
        m = margin(net.logits(x_adv), y, spec.targeted)
        dist = (x_adv - x).flatten(1).pow(2).sum(1)
        opt.zero_grad()
        (dist + spec.cw_c * torch.clamp(-m, min=-kappa)).sum().backward()
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


def optimize(net, x, y, spec: AttackSpec, *, gen=None, on_step=None) -> torch.Tensor:
    """The course lesson's attack (for comparison: no budget, larger perturbations): gradient
    descent with Adam (lr ``spec.step_size``) on the pixels of cross-entropy toward the target
    (or ascent away from the class), pixels clipped to [0, 1]; with ``spec.eps`` the result is
    projected onto that L-inf ball at the end."""
    obj = ce_objective(y, spec.targeted)
    p = x.clone().requires_grad_(True)
    opt = torch.optim.Adam([p], lr=spec.step_size)
    for _ in range(spec.steps):
        loss = -obj(net.logits(p)).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            p.clamp_(0, 1)
        if on_step:
            on_step()
    out = p.detach()
    return out if spec.eps is None else project_linf(out, x, spec.eps)


KERNELS = {"fgsm": fgsm, "pgd": pgd_linf, "pgd-l2": pgd_l2, "cw": cw_l2, "optimize": optimize}
