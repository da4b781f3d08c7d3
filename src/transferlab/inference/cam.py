"""Grad-CAM (Selvaraju et al. 2017) for a :class:`~transferlab.inference.torch_model.Run`: where in the photo the
evidence for a class lies.

The class score is differentiated with respect to the trunk's last convolutional feature map
(the map the network global-average-pools into its embedding); the spatial mean of that gradient
weighs each channel, and ``relu(sum_c weight_c * map_c)`` is the heat map. Written directly in
torch rather than with captum: captum would be one more dependency for about fifteen lines.

:func:`feature_map_split` is also what the ONNX export uses to output the same feature map, so
the torch and exported CAMs are computed from the same tensor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..errors import TransferlabError
from .heatmap import normalize_cam

Split = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class CamResult:
    """One forward (+ partial backward) pass: everything a predictor's ``analyze`` reports."""

    cam: np.ndarray  # [n, h, w] in [0, 1]
    probs: np.ndarray  # [n, k]
    features: np.ndarray  # [n, d] pooled embedding (not normalised)
    class_idx: np.ndarray  # [n] the class each map explains


def feature_map_split(model: nn.Module, family: str) -> Split:
    """``normalized x -> (fmap [n, c, h, w], pooled [n, d])`` for the trunk of an ImageClassifier.

    timm trunks (classifier reset to 0) expose ``forward_features`` / ``forward_head``. Any other
    trunk (torchvision) runs whole while a forward hook keeps the output of the last module that
    produces a spatial map (``features`` for MobileNetV2, ``layer4`` for ResNets): generic, and a
    traced ONNX export records the hooked tensor like any other. Callers should check
    :func:`is_pooled_map` before trusting a CAM: a trunk with layers after its pooling (VGG's
    fully connected layers) has no CAM in this sense.
    """
    trunk = model.trunk
    if family == "timm" and hasattr(trunk, "forward_features") and hasattr(trunk, "forward_head"):
        def timm_split(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            fm = trunk.forward_features(x)
            return fm, trunk.forward_head(fm, pre_logits=True)

        return timm_split
    return _HookSplit(trunk)


class _HookSplit:
    """See :func:`feature_map_split`; the map's module is found on the first call."""

    def __init__(self, trunk: nn.Module):
        self.trunk, self.name = trunk, None

    def _find(self, x: torch.Tensor) -> str:
        last: list[str] = []
        hooks = [m.register_forward_hook(lambda _m, _i, o, n=n: _note(last, n, o))
                 for n, m in self.trunk.named_modules() if n]
        try:
            with torch.no_grad():
                self.trunk(x[:1])
        finally:
            for h in hooks:
                h.remove()
        if not last:
            raise TransferlabError("this backbone's trunk produces no spatial feature map to explain")
        return last[-1]

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.name = self.name or self._find(x)
        kept: list[torch.Tensor] = []
        h = self.trunk.get_submodule(self.name).register_forward_hook(lambda _m, _i, o: kept.append(o))
        try:
            pooled = self.trunk(x)
        finally:
            h.remove()
        return kept[-1], pooled


def _note(last: list[str], name: str, out) -> None:
    """Remember modules (in completion order) whose output is a map larger than 1 x 1."""
    if isinstance(out, torch.Tensor) and out.dim() == 4 and out.shape[-1] * out.shape[-2] > 1:
        last.append(name)


def is_pooled_map(fmap: torch.Tensor, pooled: torch.Tensor, tol: float = 1e-4) -> bool:
    """True when the embedding is the global average of the map: then d score / d embedding
    is Grad-CAM's channel weight (times 1/hw), and the CAM can be computed without autograd."""
    if fmap.shape[:2] != pooled.shape:
        return False
    gap = fmap.float().mean((2, 3))
    return bool((gap - pooled.float()).abs().max() <= tol * max(1.0, float(pooled.abs().max())))


def grad_cam(run, pixels: torch.Tensor, class_idx: int | list[int] | None = None) -> CamResult:
    """Grad-CAM of ``run`` on ``pixels`` ([n, 3, S, S] or [3, S, S] floats in [0, 1]).

    ``class_idx``: the class to explain (one for all images, or one per image); None explains each
    image's top-1 class. Gradients flow only from the class logit back to the feature map, and
    the model's parameters stay frozen.
    """
    x = pixels[None] if pixels.dim() == 3 else pixels
    model = run.model.eval()
    split = feature_map_split(model, run.backbone.family)
    with torch.enable_grad():
        fm, pooled = split(model.normalize(x.float()).requires_grad_(True))
        logits = model.head(pooled)
        idx = logits.argmax(1) if class_idx is None else torch.as_tensor(class_idx, device=logits.device).expand(len(x))
        (grad,) = torch.autograd.grad(logits.gather(1, idx.view(-1, 1)).sum(), fm)
    weights = grad.mean((2, 3), keepdim=True)
    cam = torch.relu((weights * fm).sum(1)).detach().float().cpu().numpy()
    return CamResult(cam=normalize_cam(cam), probs=logits.detach().float().softmax(-1).cpu().numpy(),
                     features=pooled.detach().float().cpu().numpy(), class_idx=idx.cpu().numpy())
