"""The network every consumer takes: ``ImageClassifier`` = normalise -> trunk (pooled features)
-> head, on **[0, 1] RGB pixels**, so attack epsilons and dream images are in pixel units; and
``Backbone``, a pretrained classifier together with the preprocessing it was trained with."""

from __future__ import annotations

import hashlib
import importlib.util
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from ..data.geometry import DataConfig
from .labels import imagenet_classes, resolve_class


class Normalize(nn.Module):
    """(x - mean) / std as a layer, so the wrapped model takes [0, 1] pixels."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class ImageClassifier(nn.Module):
    """normalize -> trunk (pooled features) -> head. Input: [N, 3, H, W] pixels in [0, 1]."""

    def __init__(self, normalize: Normalize, trunk: nn.Module, head: nn.Module):
        super().__init__()
        self.normalize = normalize
        self.trunk = trunk
        self.head = head

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(self.normalize(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))



@dataclass
class Backbone:
    """A pretrained network ready for transfer learning.

    The network may be built on first use (``build``): everything a fully cached job needs (name,
    preprocessing, feature size, weights digest) is known without it, and building one means
    importing timm and torchvision and reading the weights, seconds a cached re-train should not
    spend (issue 16). ``model`` builds it when asked."""

    name: str
    data_config: DataConfig
    feature_dim: int
    weights_digest: str
    source: str  # "bundled" | "online" | "file"
    family: str  # "timm" | "torchvision" | "ensemble"
    network: ImageClassifier | None = field(default=None, repr=False, compare=False)  # with its ImageNet head
    build: Callable[[], ImageClassifier] | None = field(default=None, repr=False, compare=False)
    members: tuple[Backbone, ...] = field(default=(), repr=False, compare=False)  # an ensemble's, in order

    @property
    def model(self) -> ImageClassifier:
        """The network (normalise -> trunk -> ImageNet head), built now if it was not yet."""
        if self.network is None:
            if self.build is None:
                raise RuntimeError(f"backbone {self.name} has neither a network nor a way to build one")
            self.network, self.build = self.build(), None
        return self.network

    @property
    def built(self) -> bool:
        return self.network is not None

    @property
    def class_names(self) -> list[str]:
        """ImageNet names, index-aligned with ``model.head`` (every backbone's head is ImageNet's)."""
        return imagenet_classes()[0]

    @property
    def class_synonyms(self) -> list[list[str]]:
        return imagenet_classes()[1]

    @property
    def key(self) -> str:
        """Identity for caches: architecture, weights and preprocessing."""
        dc = self.data_config
        raw = f"{self.name}|{self.weights_digest}|{dc.input_size}|{dc.resize_size}|{dc.interpolation}"
        return hashlib.sha256(raw.encode()).hexdigest()[:16]

    def layers(self) -> list[str]:
        """Names of inspectable intermediate layers (4-D activations), shallow to deep."""
        return inspectable_layers(self.model.trunk)

    def class_index(self, query: str) -> int:
        return resolve_class(query, self.class_names, self.class_synonyms)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    builder: Callable[[str | None], Backbone]
    bundled: bool
    package: str  # pip distribution that ships the weights ("" for online)
    description: str
    weights_file: str = ""  # the bundled weights, relative to the package (their digest is the cache key)

    def available(self) -> bool:
        if not self.bundled:
            return False
        mod = self.package.replace("-", "_")
        return importlib.util.find_spec(mod) is not None



def split_timm(model: nn.Module) -> tuple[nn.Module, nn.Linear]:
    head = model.get_classifier()
    lin = nn.Linear(head.in_features, head.out_features)
    lin.load_state_dict(head.state_dict())
    model.reset_classifier(0)  # trunk now returns pooled pre-logits
    return model, lin


def split_last_linear(model: nn.Module) -> tuple[nn.Module, nn.Linear]:
    """torchvision: the last nn.Linear is the ImageNet classifier; replace it with Identity."""
    name = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    lin = model.get_submodule(name)
    model.set_submodule(name, nn.Identity())
    return model, lin


def wrap(name, model, split, data_config, digest, source, family) -> Backbone:
    trunk, head = split(model)
    clf = ImageClassifier(Normalize(data_config.mean, data_config.std), trunk, head)
    return Backbone(name=name, data_config=data_config, feature_dim=head.in_features, weights_digest=digest,
                    source=source, family=family, network=clf)


def inspectable_layers(trunk: nn.Module) -> list[str]:
    """Block-level modules worth looking at: timm stages/blocks, torchvision ``features.N`` or
    ``layerN``. Chosen by name pattern so the list is short and meaningful."""
    pat = re.compile(r"^(conv_stem|blocks\.\d+|conv_head|features\.\d+|layer\d|conv1|stages\.\d+)$")
    return [n for n, _ in trunk.named_modules() if pat.match(n)]

