"""transferlab: transfer learning for images on an ordinary computer.

    import transferlab as tl
    run = tl.train("photos/", backbone="efficientnet_lite0", mode="linear", out="runs/pets")
    tl.evaluate(run, "more-photos/", out="runs/pets/eval")
    run.predict(["new.jpg"], top_k=3)
    tl.load_model("efficientnet_lite0").predict(["cat.jpg"])   # a bare backbone = its ImageNet head

The package is laid out as the pipeline (lowest layer first; a module imports only from its own
layer or lower, checked by ``tests/test_layers.py``): ``errors``/``_io``/``progress`` ->
``data`` -> ``models`` -> ``runtime`` -> ``report`` -> ``features`` -> ``probe`` -> ``inference``
-> ``evaluation`` -> ``training`` -> ``explain``/``attack`` -> ``export`` -> ``apps``.

Names below are imported on first use (PEP 562), so ``import transferlab`` (and the CLI's
``--help``) does not pay for torch, timm or scikit-learn.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "Backbone": "transferlab.models.classifier",
    "ImageClassifier": "transferlab.models.classifier",
    "DataConfig": "transferlab.data.geometry",
    "create_backbone": "transferlab.models.registry",
    "list_backbones": "transferlab.models.registry",
    "load_backbone": "transferlab.models.registry",
    "register_backbone": "transferlab.models.registry",
    "ImageDataset": "transferlab.data.datasets",
    "load_dataset": "transferlab.data.datasets",
    "TransferlabError": "transferlab.errors",
    "extract": "transferlab.features",
    "Run": "transferlab.inference.torch_model",
    "load": "transferlab.inference.load",
    "load_model": "transferlab.inference.load",
    "show": "transferlab.report.figures",
    "Predictor": "transferlab.inference.base",
    "RunConfig": "transferlab.inference.config",
    "evaluate": "transferlab.evaluation.evaluate",
    "review": "transferlab.evaluation.review",
    "feature_maps": "transferlab.explain.featuremaps",
    "dream": "transferlab.explain.dream",
    "plot_dreams": "transferlab.report.figures",
    "attack_image": "transferlab.attack.single",
    "robustness": "transferlab.attack.robustness",
    "export_onnx": "transferlab.export.onnx",
    "train": "transferlab.training.api",
    "LinearOptions": "transferlab.training.options",
    "HeadOptions": "transferlab.training.options",
    "FinetuneOptions": "transferlab.training.options",
    "TransferClassifier": "transferlab.sklearn",
    "Table": "transferlab.display",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # next time a plain attribute
        return value
    raise AttributeError(f"module 'transferlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
