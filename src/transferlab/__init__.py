"""transferlab: transfer learning for images on an ordinary computer."""

__version__ = "0.1.0"

from .backbones import Backbone, DataConfig, ImageClassifier, create_backbone, list_backbones, load_backbone
from .errors import TransferlabError

__all__ = [
    "Backbone",
    "DataConfig",
    "ImageClassifier",
    "TransferlabError",
    "create_backbone",
    "list_backbones",
    "load_backbone",
]
