"""``transferlab.run``: the names 0.1.0 code imports (``from transferlab.run import load, Run``),
now defined in :mod:`transferlab.inference`."""

from .inference.config import RunConfig
from .inference.load import from_backbone, load, load_model, load_run
from .inference.torch_model import Run

__all__ = ["Run", "RunConfig", "from_backbone", "load", "load_model", "load_run"]
