"""Checkpoints of a fine-tuning run: atomic, and never unpickled.

``<run>/checkpoint/``: ``last-E.safetensors`` + ``optim-E.pt`` (E = completed epochs; optimizer
and scheduler state are plain tensors/dicts read back with ``weights_only=True``),
``best.safetensors`` (+ the validation probabilities of that epoch), ``start.safetensors`` (the
linear probe WiSE-FT mixes with), and ``state.json`` written last, naming the complete epoch.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .._io import atomic_write, save_safetensors, write_json
from ..errors import RunError
from ..models.classifier import ImageClassifier
from ..models.registry import DEFAULT_BACKBONE

CHECKPOINT_DIR = "checkpoint"
STATE = "state.json"


def _unwrap(model: nn.Module) -> ImageClassifier:
    return model.module if hasattr(model, "module") else model  # DDP


FILES = r"(last|optim)-\d+\.(safetensors|pt)|(best|start)\.safetensors"


class Checkpoints:
    """``<run>/checkpoint/``: ``last-E.safetensors`` + ``optim-E.pt`` (E = completed epochs),
    ``best.safetensors``, and ``state.json`` written last (it names the complete epoch)."""

    def __init__(self, directory: Path):
        self.dir = directory

    def state(self) -> dict | None:
        f = self.dir / STATE
        if not f.is_file():
            return None
        try:
            return json.loads(f.read_text())
        except ValueError as e:
            raise RunError(f"unreadable checkpoint state {f}: {e}") from None

    def save(self, epoch: int, model: nn.Module, optim, state: dict) -> None:
        """Epoch ``epoch``'s weights and ``optim`` (a :class:`~transferlab.training.learner.Optim`),
        then ``state`` (+ the epoch) in state.json, then drop older epochs' files."""
        save_safetensors(self.dir / f"last-{epoch}.safetensors", _unwrap(model).state_dict())
        blob = {"optimizer": optim.opt.state_dict(), "scheduler": optim.sched.state_dict(),
                "scaler": optim.scaler.state_dict() if optim.scaler is not None else {}}
        atomic_write(self.dir / f"optim-{epoch}.pt", lambda p: torch.save(blob, p))
        write_json(self.dir / STATE, {**state, "epoch": epoch})
        for f in self.dir.glob("*-*.*"):  # older epochs' files, now superseded
            m = re.fullmatch(r"(last|optim)-(\d+)\.(safetensors|pt)", f.name)
            if m and int(m.group(2)) != epoch:
                f.unlink(missing_ok=True)

    def save_best(self, model: nn.Module, val_probs: np.ndarray | None) -> None:
        sd = dict(_unwrap(model).state_dict())
        if val_probs is not None:
            sd["_val_probs"] = torch.from_numpy(np.ascontiguousarray(val_probs))
        save_safetensors(self.dir / "best.safetensors", sd)

    def load_best(self) -> tuple[dict, np.ndarray | None]:
        from safetensors.torch import load_file

        sd = load_file(str(self.dir / "best.safetensors"))
        probs = sd.pop("_val_probs", None)
        return sd, probs.numpy() if probs is not None else None

    def load_last(self, epoch: int) -> tuple[dict, dict]:
        from safetensors.torch import load_file

        w, o = self.dir / f"last-{epoch}.safetensors", self.dir / f"optim-{epoch}.pt"
        if not w.is_file() or not o.is_file():
            raise RunError(f"checkpoint of epoch {epoch} is incomplete in {self.dir}")
        return load_file(str(w)), torch.load(str(o), map_location="cpu", weights_only=True)

    def clear(self, finished_too: bool = False) -> None:
        """Remove weight files (and state.json with ``finished_too``): a fresh run never mixes
        with an old one's checkpoints, and a finished run keeps only its history."""
        pattern = FILES + (r"|state\.json" if finished_too else "")
        if self.dir.is_dir():
            for f in self.dir.iterdir():
                if re.fullmatch(pattern, f.name):
                    f.unlink()


def resumed_backbone(resume: str | Path, backbone: str, input_size: int | None,
                     source: str | Path | None = None) -> tuple[str, int | None]:
    """The backbone and input size a ``--resume`` run must continue with: the checkpoint's own
    (in ``source``, where the checkpoint really is, default ``resume``). Asking for different
    ones explicitly is an error (the saved weights would not fit)."""
    st = Checkpoints(Path(source or resume) / CHECKPOINT_DIR).state()
    if not st:
        return backbone, input_size
    saved_bb, saved_size = st.get("backbone", backbone), st.get("input_size")
    other_size = input_size and saved_size and int(input_size) != int(saved_size)
    if backbone not in (DEFAULT_BACKBONE, saved_bb) or other_size:
        raise RunError(f"{resume} was trained with --backbone {saved_bb}"
                       + (f" --input-size {saved_size}" if saved_size else "") + "; resume it with the same")
    return saved_bb, input_size or saved_size


def load_start_head(*dirs: Path) -> dict[str, torch.Tensor]:
    """The linear probe saved at the start of the run (the resumed run's, if it moved)."""
    from safetensors.torch import load_file

    for d in dirs:
        if (d / "start.safetensors").is_file():
            return load_file(str(d / "start.safetensors"))
    raise RunError(f"--wise needs {dirs[0] / 'start.safetensors'}, written when the run started")


