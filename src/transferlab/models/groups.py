"""A trunk as ordered depth groups (stem, blocks, head conv), and freezing by group: what
fine-tuning unfreezes, discriminative learning rates are set by, and the frozen prefix runs."""

from __future__ import annotations

from torch import nn

from .classifier import ImageClassifier


def depth_groups(trunk: nn.Module) -> list[list[str]]:
    """The trunk as ordered groups of module names, shallow to deep: every child of a top-level
    ``Sequential``/``ModuleList`` (timm ``blocks.N``, torchvision ``features.N``/``layerN.M``) is
    a group; runs of other top-level modules (stem conv + BN, head conv + BN) are merged.
    Groups without parameters are dropped."""
    groups: list[list[str]] = []
    run: list[str] = []
    for name, child in trunk.named_children():
        if isinstance(child, (nn.Sequential, nn.ModuleList)) and len(child) > 1:
            if run:
                groups.append(run)
                run = []
            groups += [[f"{name}.{sub}"] for sub, _ in child.named_children()]
        else:
            run.append(name)
    if run:
        groups.append(run)
    return [g for g in groups if any(True for n in g for _ in trunk.get_submodule(n).parameters())]



_BN = (nn.modules.batchnorm._BatchNorm,)


def set_trainable(model: ImageClassifier, groups: list[list[str]], n_unfrozen: int) -> None:
    model.normalize.requires_grad_(False)
    model.head.requires_grad_(True)
    first = len(groups) - n_unfrozen
    for i, g in enumerate(groups):
        for name in g:
            model.trunk.get_submodule(name).requires_grad_(i >= first)


def train_mode(model: ImageClassifier, bn: str) -> None:
    """``model.train()`` except BatchNorm: frozen statistics (eval mode) unless ``bn="train"``
    and the layer's parameters are being trained."""
    model.train()
    for m in model.modules():
        if isinstance(m, _BN):
            trainable = any(p.requires_grad for p in m.parameters(recurse=False))
            if bn != "train" or not trainable:
                m.eval()


