"""How a backbone wants its pixels: resize, centre crop, interpolation, mean/std.

Every stage (features, training, attacks, dreams, export) asks the backbone's :class:`DataConfig`;
nothing else spells ImageNet constants. Normalisation itself is a layer of the model
(:class:`transferlab.models.classifier.Normalize`), so the config's ``preprocess`` stops at [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

if TYPE_CHECKING:
    from torchvision.transforms.v2 import InterpolationMode


def _tf():
    """torchvision's functional transforms, imported on first use: importing torchvision costs
    ~1-2 s (it loads torch._dynamo), which a job whose features are all cached never needs."""
    from torchvision.transforms.v2 import functional

    return functional


@dataclass(frozen=True)
class DataConfig:
    """How a backbone wants its input: resize shorter side to ``resize_size``, centre-crop
    ``input_size``, then normalise with ``mean``/``std`` (done inside :class:`ImageClassifier`)."""

    input_size: int
    resize_size: int
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    @classmethod
    def from_crop_pct(cls, input_size: int, crop_pct: float, **kw) -> DataConfig:
        return cls(input_size=input_size, resize_size=math.floor(input_size / crop_pct), **kw)

    @classmethod
    def from_dict(cls, d: dict) -> DataConfig:
        return cls(
            input_size=int(d["input_size"]),
            resize_size=int(d["resize_size"]),
            interpolation=d["interpolation"],
            mean=tuple(d["mean"]),
            std=tuple(d["std"]),
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def pil_interpolation(self) -> InterpolationMode:
        return _tf().InterpolationMode(self.interpolation)

    def resize_crop(self, img: Image.Image) -> Image.Image:
        """Resize the shorter side to ``resize_size`` and centre-crop ``input_size`` x ``input_size``
        (PIL in, RGB PIL out); see :meth:`resize_crop_array`."""
        img = img if img.mode == "RGB" else img.convert("RGB")
        out = self.resize_crop_array(np.asarray(img))
        return img if out is None else Image.fromarray(out)

    def resize_crop_array(self, hwc: np.ndarray) -> np.ndarray | None:
        """uint8 RGB [H, W, 3] -> [S, S, 3]: torchvision's ``resize(resize_size)`` + ``center_crop``.

        Bilinear / bicubic run as torch's antialiased uint8 kernel (AVX2), which matches PIL's
        resampling to +-2/255 and costs ~0.1 ms for a 180 px photo against ~0.5 ms for Pillow's
        (non-SIMD) bicubic: on a 2-core CPU that difference is several % of extraction speed.
        Other filters, and photos so elongated that the resized image would be much larger than
        the crop, use one PIL resample of the kept box (only the output pixels are computed).
        An image already at exactly ``input_size`` x ``input_size`` passes through untouched
        (returns None): that is what the model was shown (a saved adversarial PNG, a dream), and
        a resize + crop would destroy pixel-level perturbations.
        """
        s, r = self.input_size, self.resize_size
        h, w = hwc.shape[:2]
        if (w, h) == (s, s):
            return None
        # torchvision's _compute_resized_output_size: shorter side -> r, longer side truncated
        nw, nh = (r, int(r * h / w)) if w <= h else (int(r * w / h), r)
        mode = _TORCH_MODES.get(self.interpolation)
        if mode is None or (nw * nh > 4 * r * r and min(nw, nh) >= s):
            return self._box_resize_crop(hwc, nw, nh)
        if not hwc.flags.writeable:  # PIL's buffers are read-only and torch warns about those
            hwc = hwc.copy()
        x = torch.from_numpy(hwc).permute(2, 0, 1)[None]
        x = F.interpolate(x, size=(nh, nw), mode=mode, antialias=mode != "nearest-exact")[0]
        return _tf().center_crop(x, [s, s]).permute(1, 2, 0).numpy()  # pads like torchvision if too small

    def _box_resize_crop(self, hwc: np.ndarray, nw: int, nh: int) -> np.ndarray:
        """The same geometry as one PIL resample of the kept box (``box=``): torchvision's
        _center_crop_compute_crop_anchor, mapped back to source pixels."""
        s = self.input_size
        img = Image.fromarray(hwc)
        w, h = img.size
        if min(nw, nh) < s:  # crop larger than the resized image: torchvision pads, do the same
            tf = _tf()
            img = tf.resize(img, self.resize_size, interpolation=self.pil_interpolation, antialias=True)
            return np.asarray(tf.center_crop(img, [s, s]))
        top, left = round((nh - s) / 2.0), round((nw - s) / 2.0)
        sx, sy = w / nw, h / nh
        box = (left * sx, top * sy, (left + s) * sx, (top + s) * sy)
        return np.asarray(img.resize((s, s), _PIL_RESAMPLE[self.interpolation], box=box))

    def preprocess(self, img: Image.Image) -> torch.Tensor:
        """PIL RGB image -> float tensor [3, S, S] in [0, 1] (normalisation is inside the model)."""
        tf = _tf()
        return tf.to_dtype(tf.pil_to_tensor(self.resize_crop(img)), torch.float32, scale=True)


_TORCH_MODES = {"bilinear": "bilinear", "bicubic": "bicubic", "nearest": "nearest-exact",
                "nearest-exact": "nearest-exact"}
_PIL_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "nearest-exact": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
    "lanczos": Image.Resampling.LANCZOS,
}

