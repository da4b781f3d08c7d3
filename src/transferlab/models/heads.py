"""Classifier heads on pooled backbone features, described by a small JSON-able spec so a run
directory can rebuild them without pickle."""

from __future__ import annotations

from torch import nn


def build_head(spec: dict) -> nn.Module:
    """``{"type": "linear", "in": d, "out": k}`` or
    ``{"type": "mlp", "in": d, "hidden": h, "out": k, "dropout": p}``."""
    kind = spec["type"]
    if kind == "linear":
        return nn.Linear(spec["in"], spec["out"])
    if kind == "mlp":
        return nn.Sequential(
            nn.Dropout(spec.get("dropout", 0.0)),
            nn.Linear(spec["in"], spec["hidden"]),
            nn.GELU(),
            nn.Dropout(spec.get("dropout", 0.0)),
            nn.Linear(spec["hidden"], spec["out"]),
        )
    raise ValueError(f"unknown head type {kind!r}")


def apply_temperature(head, temperature: float):
    """Divide the head's logits by T by scaling its last linear layer in place (exact:
    ``W x + b`` -> ``(W x + b) / T``); returns the head (an ``nn.Module``)."""
    import torch

    if temperature == 1.0:
        return head
    last = [m for m in head.modules() if isinstance(m, nn.Linear)]
    if not last:
        raise ValueError("the head has no linear layer to scale")
    with torch.no_grad():
        last[-1].weight.div_(temperature)
        if last[-1].bias is not None:
            last[-1].bias.div_(temperature)
    return head
