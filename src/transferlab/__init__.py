"""transferlab: transfer learning for images on an ordinary computer.

    import transferlab as tl
    run = tl.train("photos/", backbone="efficientnet_lite0", mode="linear", out="runs/pets")
    run.evaluate("more-photos/", out="runs/pets/eval")
    run.predict(["new.jpg"], top_k=3)
    tl.load("efficientnet_lite0").predict(["cat.jpg"])   # a bare backbone = its ImageNet head
"""

__version__ = "0.1.0"

from .backbones import (
    Backbone,
    DataConfig,
    ImageClassifier,
    create_backbone,
    list_backbones,
    load_backbone,
    register_backbone,
)
from .data import ImageDataset, load_dataset
from .errors import TransferlabError
from .features import extract
from .run import Run, load
from .train import train

__all__ = [
    "Backbone",
    "DataConfig",
    "ImageClassifier",
    "ImageDataset",
    "Run",
    "TransferlabError",
    "create_backbone",
    "extract",
    "list_backbones",
    "load",
    "load_backbone",
    "load_dataset",
    "register_backbone",
    "train",
]
