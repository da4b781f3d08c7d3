"""What an exported model says about itself, where other programs look for it.

- ONNX: ``metadata_props`` (labels and preprocessing as JSON, the transferlab version, the
  licence, and the image keys of ONNX's MetadataProps convention, ``docs/MetadataProps.md``:
  ``Image.BitmapPixelFormat`` etc., which Windows ML and other runtimes read to feed an image
  without being told), plus ``producer_name``/``producer_version``, ``model_version`` and
  ``doc_string``. A program handed ``model.onnx`` alone can then classify a photo.
- The licence of the pretrained weights as an identifier: SPDX for ONNX's ``model_license`` key
  (ONNX IR "optional metadata"), the Hugging Face licence id for the model card's front matter.

Everything is read from the run; nothing here imports torch at module level.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

IMAGE_PROPS = {  # the export's input: 8-bit RGB, sRGB gamma, full 0-255 range (ONNX MetadataProps.md)
    "Image.BitmapPixelFormat": "Rgb8",
    "Image.ColorSpaceGamma": "SRGB",
    "Image.NominalPixelRange": "NominalRange_0_255",
}
PRODUCER = "transferlab"

# SPDX id of each bundled backbone's weights (card.weights_licence says where they come from)
_SPDX = {"efficientnet_lite0": "Apache-2.0", "efficientnet_lite1": "Apache-2.0",
         "efficientnet_lite2": "Apache-2.0", "mobilenet_v2": "BSD-3-Clause"}


def member_names(backbone: str) -> list[str]:
    """The networks behind a backbone name: one, or an ensemble's members (sizes and view
    options stripped: ``efficientnet_lite2@384+mobilenet_v2:gem`` -> both names)."""
    from ..models.views import parse_view

    try:
        return list(dict.fromkeys(m.name for m in parse_view(backbone).members))
    except Exception:  # an unparsable name is still a name
        return [backbone]


def licence_ids(backbone: str, source: str) -> list[str | None]:
    """SPDX id of each member's weights; None where transferlab cannot know it (a local
    weights file, a hub download: their terms depend on the model)."""
    if source == "file":
        return [None]
    return [_SPDX.get(name) for name in member_names(backbone)]


def spdx_licence(backbone: str, source: str) -> str:
    """One SPDX expression for the weights (``Apache-2.0 AND BSD-3-Clause`` for a mixed
    ensemble), or ``unknown``."""
    ids = licence_ids(backbone, source)
    if None in ids:
        return "unknown"
    return " AND ".join(dict.fromkeys(ids))  # type: ignore[arg-type]


def model_version(run) -> int:
    """ONNX ``model_version`` (an integer): the UTC time the run's weights were written, as
    YYYYMMDDhhmmss, so a retrained model has a larger number; 1 for a bare backbone."""
    from ..inference.config import WEIGHTS

    weights = run.path / WEIGHTS if run.path is not None else None
    if weights is None or not weights.is_file():
        return 1
    return int(time.strftime("%Y%m%d%H%M%S", time.gmtime(weights.stat().st_mtime)))


def doc_string(run, pre: dict) -> str:
    """One paragraph: what the model does, what it takes, what it gives."""
    k, s = len(run.classes), pre["input_size"]
    shown = ", ".join(run.classes[:5]) + (", ..." if k > 5 else "")
    return (f"{run.path.name if run.path else run.backbone.name}: image classifier over {k} classes ({shown}), "
            f"backbone {run.backbone.name}, made by transferlab. Input 'pixels': uint8 RGB [n, {s}, {s}, 3] "
            f"after resizing the shorter side to {pre['resize_size']} ({pre['interpolation']}) and a centre "
            f"crop (metadata 'preprocessing'); normalisation is inside. Outputs: probs (softmax over "
            f"metadata 'labels'), logits, features (embedding), fmap (last feature map).")


def onnx_props(run, pre: dict, licence_text: str) -> dict[str, str]:
    """The ``metadata_props`` of an export: string keys to string values."""
    from .. import __version__

    props = {"labels": json.dumps(list(run.classes)), "preprocessing": json.dumps(pre),
             "transferlab_version": __version__, "backbone": run.backbone.name,
             "model_license": spdx_licence(run.backbone.name, run.backbone.source),
             "weights_license": licence_text, **IMAGE_PROPS}
    if run.threshold is not None:
        props["threshold"] = json.dumps(run.threshold)
    return props


def annotate_onnx(path: Path, run, pre: dict, licence_text: str) -> None:
    """Write the metadata into the ONNX file at ``path`` in place (the caller's temp file)."""
    import onnx

    from .. import __version__

    model = onnx.load(str(path))
    model.producer_name, model.producer_version = PRODUCER, __version__
    model.model_version = model_version(run)
    model.doc_string = doc_string(run, pre)
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, onnx_props(run, pre, licence_text))
    onnx.save(model, str(path))
