"""One photo, one attack: ``transferlab attack IMAGE``.

The attacked input is the *preprocessed* image (resize + centre crop to the model's input size):
the saved PNG is at input size, and :meth:`DataConfig.preprocess` passes such an image through
untouched, so the perturbation reaches the model bit for bit. With ``out`` the saved PNG is
re-read through the normal prediction path and that is the result reported; an attack that
still fails is reported as a failure.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.images import save_png
from ..data.loader import load_image, to_uint8
from ..display import card, one_line
from ..errors import UnknownClass
from ..options import OptionError
from .budget import AttackSpec, distortion, eps_label
from .core import AttackNet, run_attack


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
                 out: str | Path | None = None, figure: str | Path | bool | None = True, progress=False,
                 transfer_to: str | Path | None = None, **attack) -> AttackResult:
    """Attack one photo; ``model`` is a backbone name, a run directory or a :class:`Run`.

    ``attack``: ``method`` (default pgd), ``eps`` (default: the method's), ``steps``,
    ``step_size``, ``seed`` (see :meth:`AttackSpec.make`). ``target=None`` means untargeted
    (move away from the model's own prediction). With ``out``, the adversarial PNG is saved at
    input size, re-read through the prediction path, and that re-read result is the one
    reported. ``figure=True`` puts ``<out>.figure.png`` next to it. Whether the saved PNG fools
    a second model too is :func:`transfer`'s question: ``transfer_to`` (a backbone name or run
    directory; needs ``out``) puts its answer in ``result["transfer"]``.
    """
    from ..inference.load import load
    from ..inference.torch_model import Run

    if transfer_to is not None and out is None:
        raise OptionError("transfer_to", "needs {out} (the saved PNG is what is transferred)")
    run = model if isinstance(model, Run) else load(model)
    attack = {"method": "pgd", "eps": "default", **attack}
    spec = AttackSpec.make(**attack, targeted=target is not None, margin=0.5)
    net = AttackNet(run.model)
    o = _attack_one(run, net, load_image(image, run.data_config)[None], target, spec, progress)
    if out is not None:
        o.png = save_png(to_uint8(o.xq[0]), out)
        o.probs1 = run.predict_proba([o.png])[0]  # the saved file, read back as any photo: what we report
    result = AttackResult(_attack_result(run, image, spec, o, target is not None))
    result.panels, result.panel_probs, result.amplification = _panels(net, o)
    result.classes = run.classes
    result.images = {k: (np.clip(result.panels[k], 0, 1) * 255 + 0.5).astype(np.uint8)
                     for k in ("original", "adversarial")}
    if figure and o.png is not None:
        fig_path = Path(figure) if isinstance(figure, (str, Path)) else o.png.with_suffix(".figure.png")
        result.plot(out=fig_path)
        result["figure"] = str(fig_path)
    if transfer_to is not None:
        result["transfer"] = transfer(result["png"], image, str(transfer_to), result["target"])
    return result


def _attack_one(run, net: AttackNet, x: torch.Tensor, target: str | None, spec: AttackSpec, progress) -> _Outcome:
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


class AttackResult(dict):
    """The result of :func:`attack_image`: the JSON dict the CLI prints (``--json``), which shows
    itself in a notebook: a one-line repr, a card with the original and adversarial images, and
    :meth:`plot` (original | amplified perturbation | adversarial with each one's top-3)."""

    images: dict  # "original", "adversarial": [S, S, 3] uint8 (what the card shows)
    panels: dict  # the three panels of :meth:`plot`, [S, S, 3] floats in [0, 1]
    panel_probs: dict
    amplification: float
    classes: list[str]

    def __repr__(self) -> str:
        goal = self["target"] if self["targeted"] else "untargeted"
        return one_line("AttackResult", {"method": self["method"], "eps": self["eps_label"], "goal": goal,
                                         "success": self["success"], "original": self["original"]["class"],
                                         "adversarial": self["adversarial"]["class"], "linf_255": self["linf_255"]})

    def _repr_html_(self) -> str:
        o, a = self["original"], self["adversarial"]
        psnr = None if self["psnr_db"] is None else f"{self['psnr_db']:.1f} dB"
        fields = {"model": self["model"], "method": f"{self['method']}, ε = {self['eps_label']}, {self['steps']} steps",
                  "goal": self["target"] if self["targeted"] else "untargeted", "success": self["success"],
                  "L∞": f"{self['linf_255']:.1f}/255", "PSNR": psnr}
        ims = self.images
        return card(f"Attack on {Path(self['image']).name}", fields, [ims["original"], ims["adversarial"]],
                    [f"{o['class']} ({o['prob']:.2f})", f"{a['class']} ({a['prob']:.2f})"])

    def plot(self, out: str | Path | None = None):
        from ..report.figures import plot_attack, save_figure

        fig = plot_attack(self.panels, self.panel_probs, self.classes, {**self, "amplification": self.amplification})
        if out is not None:
            save_figure(fig, out)
        return fig


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


def transfer(png: str | Path | None, original: str | Path, spec: str, target_name: str | None) -> dict:
    """Score the saved adversarial PNG with another model (``spec``: backbone name or run
    directory) through its normal prediction path; for ``result["transfer"]`` of
    :func:`attack_image` (``png``, ``image`` and ``target`` of that result).

    The PNG is at the attacked model's input size; a second model with another input size
    resizes and crops it like any photo. Targeted: success = the target class; untargeted:
    success = the second model changed its mind relative to the original photo."""
    from ..inference.load import load

    if png is None:
        raise OptionError("transfer_to", "needs {out} (the saved PNG is what is transferred)")
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


def _panels(net: AttackNet, o: _Outcome) -> tuple[dict, dict, float]:
    """original | perturbation (amplified so its largest change is half the range, and scored
    by the model on its own) | adversarial: ([S, S, 3] floats, their probabilities, the factor)."""
    delta = (o.xq - o.x)[0].cpu()
    top = float(delta.abs().max())
    amp = 0.5 / top if top > 0 else 0.0  # 0 for an unchanged image
    pert = (0.5 + delta * amp).clamp(0, 1)
    pert_probs = net.score(pert[None]).softmax(1)[0].cpu().numpy()

    def hwc(t: torch.Tensor) -> np.ndarray:
        return t.permute(1, 2, 0).clamp(0, 1).cpu().numpy()

    images = {"original": hwc(o.x[0]), "perturbation": hwc(pert), "adversarial": hwc(o.xq[0])}
    probs = {"original": o.probs0, "perturbation": pert_probs, "adversarial": o.probs1}
    return images, probs, amp
