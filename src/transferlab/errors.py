"""Exceptions a user can cause. The CLI turns each into one line on stderr and exit code 2."""

from __future__ import annotations

import re


class TransferlabError(Exception):
    """Base class for user errors (bad path, unknown name, unreadable run...)."""


class UnknownBackbone(TransferlabError):
    """The backbone name is not in the registry, torchvision or timm."""


class BackboneUnavailable(TransferlabError):
    """The backbone exists but its weights cannot be had (offline, package missing)."""


class DataError(TransferlabError):
    """DATA is missing, empty, or in no format we can read."""


class ImageError(TransferlabError):
    """A single image given on the command line cannot be read."""


class RunError(TransferlabError):
    """A run directory is missing or unreadable."""


class UnknownClass(TransferlabError):
    """A class name matches no class, or several."""


class FetchError(TransferlabError):
    """A dataset download failed (offline, bad checksum, unsafe archive)."""


class OptionError(TransferlabError, ValueError):
    """An option is unknown, misplaced or out of range.

    ``problem`` may name other parameters as ``{name}`` fields; :meth:`render` spells every
    parameter the caller's way (``batch_size`` for Python, ``--batch-size`` for the CLI)."""

    def __init__(self, param: str, problem: str):
        self.param, self.problem = param, problem
        super().__init__(self.render(lambda name: name))

    def render(self, spell) -> str:
        problem = re.sub(r"{(\w+)}", lambda m: spell(m.group(1)), self.problem)
        return f"{spell(self.param)} {problem}"


class OutputError(OptionError):
    """An output path cannot be used: inside a DATA folder, not writable, or an existing run
    that ``overwrite`` was not given for. ``param`` names the option that gave the path."""


class SettingError(TransferlabError):
    """A ``TRANSFERLAB_*`` environment variable has a value we cannot use."""


class ExportError(TransferlabError):
    """The export cannot be written (existing output, unsupported model) or fails its parity check."""
