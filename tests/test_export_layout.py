"""Which reader an export folder gets: the model file marks the kind (no engine is imported to decide)."""

from __future__ import annotations

import pytest

from transferlab.errors import ExportError
from transferlab.inference.layout import MARKERS, export_kind, is_export_dir
from transferlab.inference.load import READERS, load_export


@pytest.mark.parametrize(("files", "kind"), [
    (["model.onnx"], "onnx"),
    (["saved_model/saved_model.pb"], "savedmodel"),
    (["model.tflite"], "litert"),
    (["model.tflite", "saved_model/saved_model.pb", "model.onnx"], "onnx"),  # onnxruntime first
    (["model.tflite", "saved_model/saved_model.pb"], "savedmodel"),
    (["model_int8.tflite"], None),  # the small variant alone is not an export folder
    ([], None),
])
def test_export_kind_by_model_file(tmp_path, files, kind):
    (tmp_path / "labels.json").write_text('["a", "b"]')
    for f in files:
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_bytes(b"")
    assert export_kind(tmp_path) == kind and is_export_dir(tmp_path) == (kind is not None)
    (tmp_path / "labels.json").unlink()
    assert export_kind(tmp_path) is None  # labels.json is part of every export


def test_every_kind_has_a_reader_and_a_non_export_is_refused(tmp_path):
    assert set(READERS) == set(MARKERS)
    with pytest.raises(ExportError, match="not an export directory"):
        load_export(tmp_path)
