"""Class-activation maps in numpy (no torch): an export's heat map is computed from its ``fmap``
output and the head's weights, and drawn over the photo for the web app."""

from __future__ import annotations

import math

import numpy as np


def normalize_cam(cam: np.ndarray) -> np.ndarray:
    """Scale a map [h, w] (or each of [n, h, w]) to [0, 1] by its maximum: after the ReLU the
    minimum is already 0, and a map with no positive evidence stays all zero instead of
    amplifying noise."""
    cam = np.asarray(cam, np.float32)
    top = cam.max(axis=(-2, -1), keepdims=True, initial=0.0)
    return np.where(top > 0, cam / np.maximum(top, 1e-12), 0.0).astype(np.float32)


def heatmap_overlay(pixels: np.ndarray, cam: np.ndarray, alpha: float = 0.45):
    """uint8 [S, S, 3] + CAM [h, w] in [0, 1] -> PIL image: the map upsampled (bilinear) and
    coloured with matplotlib's ``jet`` when available, else a blue-cyan-yellow-red ramp."""
    from PIL import Image

    s = pixels.shape[0]
    up = np.asarray(Image.fromarray(np.asarray(cam, np.float32), "F").resize((s, s), Image.Resampling.BILINEAR))
    rgb = _colormap(np.clip(up, 0, 1))
    out = (1 - alpha) * pixels.astype(np.float32) + alpha * rgb * 255.0
    return Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8), "RGB")


def _colormap(v: np.ndarray) -> np.ndarray:
    try:
        from matplotlib import colormaps

        return colormaps["jet"](v)[..., :3]
    except ImportError:  # a jet-like ramp: piecewise-linear R, G, B
        r = np.clip(1.5 - np.abs(4 * v - 3), 0, 1)
        g = np.clip(1.5 - np.abs(4 * v - 2), 0, 1)
        b = np.clip(1.5 - np.abs(4 * v - 1), 0, 1)
        return np.stack([r, g, b], -1)


def cam_weights(head: dict, features: np.ndarray, k: int) -> np.ndarray:
    """d logit_k / d pooled features: Grad-CAM's channel weights (times 1/hw) when the features
    are the feature map's global average. Linear head: ``W[k]``; MLP head (exact-erf GELU):
    ``W1^T (W2[k] * gelu'(W1 f + b1))`` with ``gelu'(z) = Phi(z) + z phi(z)``."""
    if head["spec"].get("type") == "linear":
        return head["weight"][k].astype(np.float64)
    z = head["fc1.weight"].astype(np.float64) @ features + head["fc1.bias"]
    phi = np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    cdf = 0.5 * (1 + np.vectorize(math.erf)(z / math.sqrt(2)))
    return head["fc1.weight"].T.astype(np.float64) @ (head["fc2.weight"][k] * (cdf + z * phi))


