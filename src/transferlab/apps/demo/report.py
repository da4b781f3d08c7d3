"""The demo's ``report.html``: every section's text and figures, linked relative to the report."""

from __future__ import annotations

import html
from pathlib import Path

from ..._io import atomic_write


def write_report(out: Path, sections: list[dict], total: float | None = None) -> Path:
    parts = ["<!doctype html><meta charset='utf-8'><title>transferlab demo</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}img{max-width:100%;"
             "max-height:520px;margin:4px;border:1px solid #ddd}pre{background:#f6f6f6;padding:8px}</style>",
             "<h1>transferlab demo</h1><p>Everything below ran offline on this machine with bundled weights.</p>"]
    for s in sections:
        parts.append(f"<h2>{html.escape(s['title'])}</h2>")
        if s.get("text"):
            parts.append("<pre>" + html.escape("\n".join(s["text"])) + "</pre>")
        for f in s.get("figures", []):
            rel = Path(f).resolve().relative_to(out.resolve()) if Path(f).resolve().is_relative_to(
                out.resolve()) else Path(f).resolve()
            parts.append(f"<img src='{html.escape(str(rel))}' alt='{html.escape(Path(f).name)}'>")
        parts.append(f"<p><small>{s.get('seconds', '')} s</small></p>")
    if total is not None:
        parts.append(f"<p>Total: {total} s.</p>")
    text = "\n".join(parts)
    return atomic_write(out / "report.html", lambda p: p.write_text(text))
