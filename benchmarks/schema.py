"""The shape every result file has; :func:`problems` lists what is wrong with one (empty: valid).

Hand-written rather than a JSON-Schema library: the checks that matter (a figure has a finite
value or None with a unit, a skipped row says why, the machine names its CPU kind) are a few
lines, and the harness must not need an extra dependency to check its own output.
"""

from __future__ import annotations

import math

from .core import PRESETS, STATUSES

SCHEMA = 1
TOP = {"schema": int, "benchmark": str, "area": str, "title": str, "preset": str, "status": str, "date": str,
       "seconds": (int, float), "git": dict, "machine": dict, "load": dict, "settings": dict, "notes": list,
       "rows": list}
MACHINE = {"cpu_kind": str, "cpu_model": str, "flags": list, "cores": int, "python": str, "versions": dict}
LOAD = {"before": list, "after": list, "contended": bool}
ROW = {"tool": str, "version": str, "recipe": str, "figures": dict, "settings": dict, "status": str,
       "reason": str, "note": str}


def _typed(d: dict, spec: dict, where: str) -> list[str]:
    out = []
    for key, kind in spec.items():
        if key not in d:
            out.append(f"{where}: missing '{key}'")
        elif not isinstance(d[key], kind) or (kind is int and isinstance(d[key], bool)):
            out.append(f"{where}: '{key}' is {type(d[key]).__name__}")
    return out


def _figure(name: str, f, where: str) -> list[str]:
    if not isinstance(f, dict) or set(f) != {"value", "unit"}:
        return [f"{where}: figure '{name}' is not {{value, unit}}"]
    v = f["value"]
    if v is not None and (isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v)):
        return [f"{where}: figure '{name}' value {v!r} is not a finite number or null"]
    return [] if isinstance(f["unit"], str) else [f"{where}: figure '{name}' has no unit string"]


def _row(i: int, r, failed: bool) -> list[str]:
    where = f"rows[{i}]"
    if not isinstance(r, dict):
        return [f"{where}: not an object"]
    out = _typed(r, ROW, where)
    if out:
        return out
    if not r["tool"].strip() or not r["recipe"].strip() or not r["version"].strip():
        out.append(f"{where}: tool, version and recipe must be named")
    if r["status"] not in STATUSES:
        out.append(f"{where}: status {r['status']!r}")
    elif r["status"] != "ok" and not r["reason"].strip():
        out.append(f"{where}: a {r['status']} row must say why")
    elif r["status"] == "ok" and not failed and not r["figures"]:
        out.append(f"{where}: an ok row without figures")
    for name, f in r["figures"].items():
        out += _figure(name, f, where)
    return out


def problems(d) -> list[str]:
    """Everything wrong with one result (a parsed JSON object); [] when it is valid."""
    if not isinstance(d, dict):
        return ["not a JSON object"]
    out = _typed(d, TOP, "result")
    if out:
        return out
    if d["schema"] != SCHEMA:
        out.append(f"schema {d['schema']} (expected {SCHEMA})")
    if d["preset"] not in PRESETS:
        out.append(f"preset {d['preset']!r}")
    if d["status"] not in ("ok", "failed"):
        out.append(f"status {d['status']!r}")
    if d["status"] == "failed" and not d.get("error"):
        out.append("a failed result must carry its error")
    out += _typed(d["machine"], MACHINE, "machine") + _typed(d["load"], LOAD, "load")
    if not (d["git"].get("commit") is None or isinstance(d["git"].get("commit"), str)):
        out.append("git: commit is not a string")
    if d["status"] == "ok" and not d["rows"]:
        out.append("an ok result without rows")
    for i, r in enumerate(d["rows"]):
        out += _row(i, r, d["status"] == "failed")
    return out
