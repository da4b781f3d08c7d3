""""Ideal class" images: optimise the pixels until a network says CLASS.

Two methods:

* ``plain`` -- the lesson's method, exactly: start from random noise, take Adam steps on the
  pixels themselves to minimise ``10 * cross_entropy(target) + tv * total_variation``. With
  ``tv = 0`` it gives the high-frequency noise that fools only the network that made it.
* ``lucid`` (default) -- feature visualisation as in Olah, Mordvintsev & Schubert, "Feature
  Visualization" (Distill 2017) and Mordvintsev et al., "Differentiable Image Parameterizations"
  (Distill 2018), whose reference code is tensorflow/lucid (Apache-2.0) and its PyTorch port
  Lucent. This is a small re-implementation, not a dependency: the image lives in Fourier space
  with 1/f amplitude scaling in a decorrelated colour space, and every step shows the network
  randomly jittered / scaled / rotated copies (transformation robustness). The result is an
  image with object-like structure that an independent network often recognises too.

Everything works in [0, 1] pixel space (the model normalises inside), and every reported
probability is of the *saved* 8-bit image, at the model's input size.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ..data.images import save_png
from ..data.loader import load_image, to_uint8
from ..display import card, one_line
from ..errors import TransferlabError
from ..options import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE, Choice, Interval, OptionError, Options, Rule

METHODS = ("plain", "lucid")
OBJECTIVES = ("prob", "logit", "margin")

# Square root of ImageNet's RGB colour-correlation matrix (its SVD factor), from tensorflow/lucid
# optvis/param/color.py (Apache-2.0). Multiplying by it turns decorrelated channels into RGB, so
# that the optimiser's steps are in directions natural images actually vary in.
_COLOR_CORRELATION_SVD_SQRT = torch.tensor(
    [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=torch.float32
)
COLOR_CORRELATION = _COLOR_CORRELATION_SVD_SQRT / _COLOR_CORRELATION_SVD_SQRT.norm(dim=0).max()


# --------------------------------------------------------------------------------------------
# Image parameterisations: nn.Modules whose forward() renders [B, 3, S, S] pixels in [0, 1]
# --------------------------------------------------------------------------------------------
class PixelImage(nn.Module):
    """Pixels as parameters (the lesson's parameterisation); clamped to [0, 1] after each step."""

    def __init__(self, init: torch.Tensor):
        super().__init__()
        self.pixels = nn.Parameter(init.clone())

    def forward(self) -> torch.Tensor:
        return self.pixels

    @torch.no_grad()
    def project(self) -> None:
        self.pixels.clamp_(0, 1)


def _freqs(size: int) -> torch.Tensor:
    fy = torch.fft.fftfreq(size)[:, None]
    fx = torch.fft.rfftfreq(size)[None, :]
    return (fx * fx + fy * fy).sqrt()


class FourierImage(nn.Module):
    """Image as a spectrum scaled by 1/f, in decorrelated colour space, squashed by a sigmoid.

    Natural images have ~1/f amplitude spectra; scaling the parameters that way makes gradient
    steps change low frequencies as readily as high ones, so the optimiser stops preferring
    pixel noise (Mordvintsev et al. 2018; Lucid's ``fft_image`` + ``to_valid_rgb``).
    ``init``: optional [B, 3, S, S] pixels to start from (inverted exactly), else small noise.
    """

    _MAGIC = 4.0  # Lucid's output scaling: keeps the initial image near grey

    def __init__(self, size: int, batch: int = 1, sd: float = 0.01, decay: float = 1.0,
                 init: torch.Tensor | None = None, generator: torch.Generator | None = None):
        super().__init__()
        self.size = size
        f = _freqs(size)
        self.register_buffer("scale", 1.0 / f.clamp(min=1.0 / size) ** decay)
        self.register_buffer("color", COLOR_CORRELATION.clone())
        if init is None:
            spec = torch.randn(batch, 3, *f.shape, 2, generator=generator) * sd
        else:
            spec = torch.view_as_real(self._invert(init.float()))
        self.spectrum = nn.Parameter(spec)

    def _invert(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.clamp(1e-3, 1 - 1e-3)
        x = torch.log(x / (1 - x))  # inverse sigmoid
        x = torch.einsum("bdhw,cd->bchw", x, torch.linalg.inv(self.color))
        return torch.fft.rfft2(x * self._MAGIC, norm="ortho") / self.scale

    def forward(self) -> torch.Tensor:
        spec = torch.view_as_complex(self.spectrum * self.scale[None, None, ..., None])
        x = torch.fft.irfft2(spec, s=(self.size, self.size), norm="ortho") / self._MAGIC
        x = torch.einsum("bchw,dc->bdhw", x, self.color)
        return torch.sigmoid(x)

    def project(self) -> None:  # the sigmoid keeps pixels valid
        pass


# --------------------------------------------------------------------------------------------
# Losses and transformation robustness
# --------------------------------------------------------------------------------------------
def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Sum of absolute differences between neighbouring pixels, per image (the definition of
    ``tf.image.total_variation``), averaged over the batch. Penalises high-frequency noise."""
    dh = (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).sum(1)
    dw = (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).sum(1)
    return (dh + dw).mean()


def random_transform(x: torch.Tensor, out_size: int, generator: torch.Generator, st: DreamSettings) -> torch.Tensor:
    """``st.copies`` randomly shifted (``st.jitter`` px), scaled (``st.scale``) and rotated
    (``st.degrees``) views of each image of ``x`` [B, 3, S, S] (image-major: [B * copies, 3, out,
    out]) in one ``grid_sample``: Lucid's pad + jitter + random_scale + random_rotate, fused.
    Reflection padding, so the border never becomes a feature the network can latch onto."""
    g, scale = generator, st.scale
    n = x.shape[0] * st.copies
    ang = (torch.rand(n, generator=g) * 2 - 1) * math.radians(st.degrees)
    zoom = scale[0] + torch.rand(n, generator=g) * (scale[1] - scale[0])
    shift = (torch.rand(n, 2, generator=g) * 2 - 1) * (2 * st.jitter / x.shape[-1])
    cos, sin = torch.cos(ang) / zoom, torch.sin(ang) / zoom
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                         torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta.to(x.device), [n, 3, out_size, out_size], align_corners=False)
    return F.grid_sample(x.repeat_interleave(st.copies, 0), grid, mode="bilinear", padding_mode="reflection",
                         align_corners=False)


def class_objective(logits: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """Loss to minimise (``target``: [N] class indices). ``prob``: cross-entropy, i.e. raise the
    softmax probability; ``logit``: raise the raw logit (Lucid's usual choice); ``margin``: logit
    minus the mean of the other logits, plus cross-entropy."""
    ce = F.cross_entropy(logits, target)
    if kind == "prob":
        return ce
    own = logits.gather(1, target[:, None])[:, 0]
    if kind == "logit":
        return -own.mean()
    if kind == "margin":
        others = (logits.sum(1) - own) / (logits.shape[1] - 1)
        return -(own - others).mean() + ce
    raise ValueError(f"unknown objective {kind!r}; choose from {', '.join(OBJECTIVES)}")


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------
@dataclass(repr=False)
class DreamResult:
    """The saved 8-bit image and how the model (and optionally a second one) scores it."""

    image: np.ndarray  # [S, S, 3] uint8
    target: str
    target_index: int
    prob: float  # target probability of the 8-bit image under the model that made it
    top: list[tuple[str, float]]
    model: str
    method: str
    steps: int
    seed: int
    seconds: float
    settings: dict = field(default_factory=dict)
    check: dict | None = None  # {"backbone", "prob", "top", "top1_is_target"}
    snapshots: list[np.ndarray] = field(default_factory=list)
    paths: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "target": self.target, "target_index": self.target_index, "model": self.model,
            "method": self.method, "steps": self.steps, "seed": self.seed,
            "prob": round(self.prob, 4), "top": [[c, round(p, 4)] for c, p in self.top],
            "check": self.check, "seconds": round(self.seconds, 2), "settings": self.settings,
            **self.paths,
        }

    def __repr__(self) -> str:
        check = None
        if self.check:
            check = f"{Path(self.check['backbone']).name}: {self.check['top'][0][0]} {self.check['top'][0][1]:.2f}"
        return one_line("DreamResult", {"target": self.target, "method": self.method, "prob": self.prob,
                                        "steps": self.steps, "model": self.model, "check": check})

    def _repr_html_(self) -> str:
        fields = {"target": self.target, "model": self.model, "method": f"{self.method}, {self.steps} steps",
                  "p(target)": f"{self.prob:.3f}", "top-3": ", ".join(f"{c} {p:.2f}" for c, p in self.top[:3]),
                  "second model": self.check and f"{self.check['backbone']}: "
                                                 f"{self.check['top'][0][0]} {self.check['top'][0][1]:.2f}",
                  "seconds": f"{self.seconds:.1f}"}
        return card(f"Dream: ideal {self.target}", fields, [*self.snapshots[-3:], self.image],
                    [*(f"step {i + 1}" for i in range(len(self.snapshots[-3:]))), "final"], size=200)

    def plot(self, out: str | Path | None = None):
        """The image, titled with its own-model (and check-model) probability."""
        from ..report.figures import plot_dream_comparison, save_figure

        fig = plot_dream_comparison([self.image], [self.to_dict()], titles=[self.method])
        if out is not None:
            save_figure(fig, out)
        return fig

    def save(self, path: str | Path) -> Path:
        p = save_png(self.image, path)
        self.paths["out"] = str(p)
        if self.snapshots:
            strip = np.concatenate([*self.snapshots, self.image], axis=1)
            s = save_png(strip, p.with_name(f"{p.stem}_snapshots.png"))
            self.paths["snapshots"] = str(s)
        return p


@torch.no_grad()
def score_image(model: nn.Module, image: np.ndarray | Image.Image, data_config, classes: list[str],
                target: int, k: int = 3) -> tuple[float, list[tuple[str, float]]]:
    """Target probability and top-k of an 8-bit image, preprocessed as any photo would be (an
    image already at the input size passes through untouched)."""
    pil = image if isinstance(image, Image.Image) else Image.fromarray(image)
    x = data_config.preprocess(pil)[None]
    dev = next(model.parameters()).device
    p = model(x.to(dev)).float().softmax(-1)[0].cpu()
    top = p.topk(min(k, len(classes)))
    pairs = zip(top.values.tolist(), top.indices.tolist(), strict=True)
    return float(p[target]), [(classes[i], float(v)) for v, i in pairs]


# --------------------------------------------------------------------------------------------
# The optimisation
# --------------------------------------------------------------------------------------------
DEFAULTS = {
    "plain": {"steps": 200, "lr": 0.02, "tv": 0.005},
    # Chosen by a sweep over 10 classes (BENCHMARKS.md, issue 4): the margin objective and
    # strong jitter / scale / rotation made the most images that mobilenet_v2 also recognises.
    "lucid": {"steps": 512, "lr": 0.05, "tv": 0.0, "copies": 2, "objective": "margin", "decay": 1.0,
              "jitter": 32, "scale": (0.6, 1.4), "degrees": 30},
}
PLAIN_CE_WEIGHT = 10.0  # the lesson's loss: 10 * cross-entropy + tv * total variation

SETTINGS = ("steps", "lr", "tv", "copies", "objective", "decay", "jitter", "scale", "degrees")


@dataclass(frozen=True)
class DreamSettings(Options):
    """How to dream: the method, its knobs (:data:`SETTINGS`), the seed and how many snapshots
    to keep. Build it with :meth:`make`, which fills the method's defaults (:data:`DEFAULTS`)."""

    constraints: ClassVar[dict[str, Rule]] = {
        "method": Choice(tuple(METHODS)), "objective": Choice(tuple(OBJECTIVES)), "steps": AT_LEAST_ONE,
        "lr": POSITIVE, "tv": Interval(float, 0), "copies": AT_LEAST_ONE, "seed": NON_NEGATIVE,
        "snapshots": NON_NEGATIVE}

    method: str = "lucid"
    steps: int = 512
    lr: float = 0.05
    tv: float = 0.0
    copies: int = 2
    objective: str = "margin"
    decay: float = 1.0
    jitter: float = 32
    scale: tuple[float, float] = (0.6, 1.4)
    degrees: float = 30
    seed: int = 0
    snapshots: int = 0

    @classmethod
    def make(cls, method: str = "lucid", **given) -> DreamSettings:
        """The method's defaults overridden by ``given`` (None = default); unknown names, methods,
        objectives and values out of range are an :class:`~transferlab.options.OptionError`."""
        method = cls.constraints["method"]("method", method)
        for name in sorted(set(given) - set(SETTINGS) - {"seed", "snapshots"}):
            raise OptionError(name, f"is not a dream setting (settings: {', '.join(SETTINGS)}, seed, snapshots)")
        d = DEFAULTS[method]
        st = {k: (d[k] if given.get(k) is None else given[k]) for k in SETTINGS if k in d}
        return cls(method=method, seed=given.get("seed") or 0, snapshots=given.get("snapshots") or 0,
                   **st).validate()

    def used(self) -> dict:
        """The knobs that apply to this method, as reported in results."""
        return {k: getattr(self, k) for k in SETTINGS if k in DEFAULTS[self.method]}


def _parameterise(st: DreamSettings, size: int, init: torch.Tensor | None, b: int, g: torch.Generator):
    start = None if init is None else init.to(torch.float32).expand(b, -1, -1, -1)
    if st.method == "plain":
        return PixelImage(torch.rand(b, 3, size, size, generator=g) if start is None else start)
    return FourierImage(size, batch=b, decay=st.decay, generator=g, init=start)


def _loss(model: nn.Module, img: torch.Tensor, tgt: torch.Tensor, st: DreamSettings, g: torch.Generator):
    """plain: the lesson's weighted cross-entropy; lucid: the objective over jittered copies;
    both plus ``tv`` x total variation."""
    if st.method == "plain":
        loss = PLAIN_CE_WEIGHT * F.cross_entropy(model(img), tgt)
    else:
        views = random_transform(img, img.shape[-1], g, st)
        loss = class_objective(model(views), tgt.repeat_interleave(st.copies), st.objective)
    return loss + st.tv * total_variation(img) if st.tv else loss


def optimise_image(model: nn.Module, target: int | Sequence[int], size: int, settings: DreamSettings,
                   init: torch.Tensor | None = None, on_step=None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Core loop, model-agnostic. ``target``: one class index, or several to dream a batch at once
    (images are independent: the model is in eval mode). Returns (final [B, 3, S, S] in [0, 1],
    ``settings.snapshots`` intermediate [B, 3, S, S] images).

    ``init``: [3, S, S] pixels to start from instead of noise. ``on_step(i, loss)`` is called
    after every step (progress bars).
    """
    st = settings
    dev = next(model.parameters()).device
    tgt = torch.tensor([target] if isinstance(target, int) else list(target), device=dev)
    g = torch.Generator().manual_seed(st.seed)
    param = _parameterise(st, size, init, len(tgt), g).to(dev)
    opt = torch.optim.Adam(param.parameters(), lr=st.lr)
    keep = {round(i * st.steps / (st.snapshots + 1)) for i in range(1, st.snapshots + 1)}
    shots: list[torch.Tensor] = []
    for i in range(st.steps):
        loss = _loss(model, param(), tgt, st, g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        param.project()
        if i + 1 in keep:
            shots.append(param().detach().cpu())
        if on_step is not None:
            on_step(i, loss.item())
    with torch.no_grad():
        return param().detach().cpu(), shots


def dream(target: str, model: str | Path = "efficientnet_lite0", *, check_with: str | None = None,
          init_image: str | Path | None = None, out: str | Path | None = None, progress=True,
          **settings) -> DreamResult:
    """Make an image ``model`` (a run directory or backbone name) classifies as ``target``.

    ``target``: an ImageNet class (fuzzy: ``siamese``) or one of a run's classes. ``check_with``:
    a second model (backbone name or run directory) that scores the saved image. ``init_image``:
    start from this photo. ``settings``: ``method`` (lucid | plain), ``steps``, ``tv``, ``lr``,
    ``seed``, ``snapshots``... (see :class:`DreamSettings`).
    """
    from ..inference.load import load
    from ..progress import resolve

    st = DreamSettings.make(**settings)  # fail before loading anything
    if out is not None and Path(out).suffix.lower() != ".png":
        raise OptionError("out", f"must be a .png file (lossless), got {out}")
    run = load(model)
    idx = run.class_index(target)
    dc = run.data_config
    init = load_image(init_image, dc) if init_image else None
    t0 = time.perf_counter()
    with resolve(progress)(f"dream {st.method}", st.steps) as adv:
        final, shots = optimise_image(run.model, idx, dc.input_size, st, init,
                                      on_step=lambda i, loss: adv(1, info=f"loss {loss:.3f}"))
    img8 = to_uint8(final[0])
    prob, top = score_image(run.model, img8, dc, run.classes, idx)
    res = DreamResult(
        image=img8, target=run.classes[idx], target_index=idx, prob=prob, top=top, model=run.name,
        method=st.method, steps=st.steps, seed=st.seed, seconds=time.perf_counter() - t0, settings=st.used(),
        snapshots=[to_uint8(s[0]) for s in shots],
    )
    if check_with:
        res.check = check_image(img8, run.classes[idx], check_with)
    if out is not None:
        res.save(out)
    return res


def check_image(image: np.ndarray, target: str, model: str | Path) -> dict:
    """Score an image with an independent model (backbone name or run directory): does it see
    ``target`` too?"""
    from ..inference.load import load

    other = load(model)
    try:
        j = other.class_index(target)
    except TransferlabError:
        j = None  # e.g. a run's own class that ImageNet does not have
    p, top = score_image(other.model, image, other.data_config, other.classes, j if j is not None else 0)
    return {
        "backbone": other.name,
        "prob": round(p, 4) if j is not None else None,
        "top": [[c, round(v, 4)] for c, v in top],
        "top1_is_target": j is not None and top[0][0] == other.classes[j],
    }
