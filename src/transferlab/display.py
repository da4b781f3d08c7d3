"""How results look in a notebook: one-line ``repr``s, compact HTML cards with thumbnails, and
small tables.

Every result object (a run, an evaluation, predictions, a leaderboard, an attack, a dream) shows
itself through these helpers, so they look alike. Plain Python + Pillow (no torch, no pandas):
:class:`Table` converts to a pandas DataFrame on request, for users who have pandas.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path

REPR_MAX = 200  # a repr fits on one line


def one_line(name: str, fields: dict) -> str:
    """``Name(a=1, b='x', ...)`` on one line, at most :data:`REPR_MAX` characters (values are
    shortened, then fields dropped from the end, marked by ``...``)."""
    parts = [f"{k}={_short(v)}" for k, v in fields.items() if v is not None]
    text = f"{name}({', '.join(parts)})"
    while len(text) > REPR_MAX and parts:
        parts.pop()
        text = f"{name}({', '.join([*parts, '...'])})"
    return text[:REPR_MAX]


def _short(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    s = repr(str(v)) if isinstance(v, (str, Path)) else repr(v)
    return s if len(s) <= 60 else s[:28] + "..." + s[-28:]


def thumbnail(image, size: int = 160) -> str:
    """A data: URL (JPEG) of a path, PIL image or HxWx3 uint8 array, at most ``size`` px a side."""
    import numpy as np
    from PIL import Image

    if isinstance(image, (str, Path)):
        im = Image.open(image)
        im.draft("RGB", (size, size))
    elif isinstance(image, np.ndarray):
        im = Image.fromarray(np.asarray(image, np.uint8))
    else:
        im = image
    im = im.convert("RGB")
    im.thumbnail((size, size))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def card(title: str, fields: dict, images: Sequence = (), captions: Sequence[str] = (), size: int = 160) -> str:
    """A compact HTML card: a title, a two-column table of ``fields``, a row of thumbnails."""
    rows = "".join(f"<tr><th style='text-align:left;padding-right:1em'>{html.escape(str(k))}</th>"
                   f"<td>{html.escape(_fmt(v))}</td></tr>" for k, v in fields.items() if v is not None)
    thumbs = "".join(
        f"<figure style='display:inline-block;margin:4px;text-align:center'>"
        f"<img src='{_src(im, size)}' style='max-width:{size}px;max-height:{size}px'/>"
        f"<figcaption style='font-size:80%'>{html.escape(cap)}</figcaption></figure>"
        for im, cap in zip(images, [*captions, *[""] * len(images)]) if im is not None and _src(im, 8))
    return (f"<div style='border:1px solid #ccc;border-radius:6px;padding:8px;display:inline-block'>"
            f"<b>{html.escape(title)}</b><table>{rows}</table>{thumbs}</div>")


def _src(image, size: int) -> str:
    """A thumbnail's data URL, or "" for a file that is missing or not an image (a card never fails)."""
    try:
        return thumbnail(image, size)
    except (OSError, ValueError):
        return ""


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def percent(v: float | None) -> str | None:
    """0.9123 -> '91.23 %' (None stays None: a field a card leaves out)."""
    return None if v is None else f"{100 * v:.2f} %"


class Table(list):
    """Rows (dicts with the same keys) that show as an HTML table in a notebook and as aligned
    text elsewhere; :meth:`to_pandas` for a DataFrame. Still a list, so code that indexed the
    plain list of dicts keeps working."""

    def __init__(self, rows=(), name: str = "Table"):
        super().__init__(rows)
        self.name = name

    def __getitem__(self, index):
        """A row; a slice stays a Table (``ev.per_class[:5]`` shows as a table too)."""
        got = super().__getitem__(index)
        return self._like(got) if isinstance(index, slice) else got

    def _like(self, rows) -> Table:
        return Table(rows, name=self.name)

    @property
    def columns(self) -> list[str]:
        return list(self[0]) if self else []

    def to_pandas(self):
        import pandas as pd

        return pd.DataFrame(list(self))

    def __repr__(self) -> str:
        return one_line(self.name, {"rows": len(self), "columns": self.columns})

    def __str__(self) -> str:
        if not self:
            return f"{self.name}: empty"
        cells = [[_fmt(r.get(c)) for c in self.columns] for r in self]
        widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(self.columns)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(self.columns, widths))]
        lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(f"<td>{_cell(r.get(c))}</td>" for c in self.columns) + "</tr>"
                       for r in self[:50])
        more = f"<p>… {len(self) - 50} more rows</p>" if len(self) > 50 else ""
        return f"<b>{html.escape(self.name)}</b><table><tr>{head}</tr>{body}</table>{more}"


def _cell(v) -> str:
    if isinstance(v, str) and Path(v).suffix.lower() in (".jpg", ".jpeg", ".png") and Path(v).is_file():
        return f"<img src='{thumbnail(v, 64)}'/> {html.escape(Path(v).name)}"
    return html.escape(_fmt(v))
