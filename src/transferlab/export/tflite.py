"""LiteRT (TensorFlow Lite) files: conversion from the export's SavedModel and metadata embedded
in the flatbuffer. They are run by :class:`~transferlab.inference.tf_model.LiteRTModel` (the
LiteRT interpreter, ``ai-edge-litert``).

- ``model.tflite`` (float32) and a smaller variant, ``model_int8.tflite`` or
  ``model_float16.tflite`` (see :data:`SMALL_KINDS` for which and why), both with the
  SavedModel's ``serving_default`` signature: uint8 pixels ``[n, S, S, 3]`` in, ``probs``,
  ``logits``, ``features``, ``fmap`` out.
- The TFLite schema keeps named metadata buffers beside the graph (``Model.metadata``, the
  mechanism TFLite's own ``min_runtime_version`` entry uses); transferlab stores
  ``transferlab.labels`` and ``transferlab.preprocessing`` (JSON) there, so the file alone says
  what it answers and how to feed it. Interpreters ignore entries they do not know.

TensorFlow is imported only to convert (and to read the metadata back: the schema module ships
with it); running needs only ``ai-edge-litert`` and numpy.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import ExportError
from ..inference.tf_model import import_tensorflow
from .layout import SIGNATURE

# The smaller variant, by preference (layout.SMALL_TFLITES names the files): dynamic-range int8
# (int8 weights, float activations; no calibration data needed) is a quarter of float32's size (Lite0:
# 3.8 vs 13.6 MB), the point of a phone file; it moved probabilities by up to 0.1 and agreed with
# PyTorch on 99-100 % of the photos for linear probes, but on only 97 % of 100 Oxford test photos for
# a fine-tuned Lite0 (whose weights moved away from ImageNet's). Where int8 misses the 99 %
# agreement bar, float16 weights (half the size, float32's answers) are written instead.
SMALL_KINDS = ("int8", "float16")
META_KEYS = ("transferlab.labels", "transferlab.preprocessing")


def convert(saved_model: Path, kind: str = "float32") -> bytes:
    """A ``.tflite`` flatbuffer of ``saved_model``'s serving signature: ``float32``, ``float16``
    (weights stored as float16) or ``int8`` (dynamic-range quantised weights). Only TFLite's
    builtin ops are allowed: a model needing TensorFlow (Flex) ops would not run on a phone's
    plain interpreter, so that raises instead."""
    tf = import_tensorflow()

    conv = tf.lite.TFLiteConverter.from_saved_model(str(saved_model), signature_keys=[SIGNATURE])
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if kind in ("float16", "int8"):
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        if kind == "float16":
            conv.target_spec.supported_types = [tf.float16]
    elif kind != "float32":
        raise ValueError(f"unknown LiteRT variant {kind!r}")
    try:
        return conv.convert()
    except Exception as e:  # the converter raises its own ConverterError with a long MLIR dump
        why = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ExportError(f"LiteRT conversion ({kind}) failed: {why}") from None


def with_metadata(model: bytes, entries: dict[str, str]) -> bytes:
    """``model`` with named metadata buffers added (replacing entries of the same name), through
    the TFLite schema's object API (the schema module ships with TensorFlow)."""
    import flatbuffers

    import_tensorflow()  # triton first (see there)
    from tensorflow.lite.python import schema_py_generated as schema

    m = schema.ModelT.InitFromPackedBuf(model, 0)
    m.metadata = [e for e in (m.metadata or []) if e.name.decode() not in entries]
    m.buffers = m.buffers or []
    for name, text in entries.items():
        buf = schema.BufferT()
        buf.data = np.frombuffer(text.encode("utf-8"), np.uint8)
        m.buffers.append(buf)
        meta = schema.MetadataT()
        meta.name, meta.buffer = name.encode(), len(m.buffers) - 1
        m.metadata.append(meta)
    b = flatbuffers.Builder(len(model) + 4096)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def read_metadata(path: Path) -> dict[str, str]:
    """The named metadata buffers of a ``.tflite`` file (``min_runtime_version``, transferlab's)."""
    import_tensorflow()  # triton first (see there)
    from tensorflow.lite.python import schema_py_generated as schema

    buf = Path(path).read_bytes()
    m = schema.Model.GetRootAs(buf, 0)
    out = {}
    for i in range(m.MetadataLength()):
        meta = m.Metadata(i)
        data = m.Buffers(meta.Buffer()).DataAsNumpy()
        out[meta.Name().decode()] = bytes(data).decode("utf-8", "replace") if isinstance(data, np.ndarray) else ""
    return out


def metadata_entries(labels: list[str], pre: dict) -> dict[str, str]:
    return dict(zip(META_KEYS, (json.dumps(labels), json.dumps(pre)), strict=True))
