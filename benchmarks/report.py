"""BENCHMARKS.md from the result files: the hand-written template (how to read this, methods, the
conclusions kept from earlier investigations) with one current table per benchmark and CPU kind
put in at ``{{results}}``. Every figure links to the result file it comes from."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .core import load_all
from .machine import KINDS, REPO
from .schema import problems

TEMPLATE = Path(__file__).resolve().parent / "template.md"
MARK = "{{results}}"


def load_results(results: Path) -> dict[str, list[tuple[Path, dict]]]:
    """{cpu kind: [(file, result), ...]} in the registry's order; unreadable files come back as
    results with a ``problems`` list so the report shows them instead of dropping them."""
    order = list(load_all())
    out: dict[str, list[tuple[Path, dict]]] = {}
    for f in sorted(results.glob("*/*.json")):
        try:
            d = json.loads(f.read_text())
            bad = problems(d)
        except ValueError as e:
            d, bad = {}, [f"not JSON: {e}"]
        if bad:
            d = {"benchmark": f.stem, "problems": bad}
        out.setdefault(f.parent.name, []).append((f, d))
    rank = {k: i for i, k in enumerate(KINDS)}
    for v in out.values():
        v.sort(key=lambda fd: order.index(fd[1]["benchmark"]) if fd[1]["benchmark"] in order else len(order))
    return dict(sorted(out.items(), key=lambda kv: rank.get(kv[0], len(rank))))


def fmt(f: dict) -> str:
    v, unit = f["value"], f["unit"]
    if v is None:
        return "–"
    text = f"{v:,.0f}" if unit in ("MB", "") and float(v).is_integer() else f"{v:g}"
    return f"{text} {unit}".strip() if unit not in ("", "x") else text


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def table(d: dict, link: str) -> list[str]:
    cols = list(dict.fromkeys(k for r in d["rows"] for k in r["figures"]))
    notes = any(r["note"] for r in d["rows"])
    head = ["tool", *cols, *(["note"] if notes else []), "version", "recipe"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in d["rows"]:
        tool = r["tool"] if r["status"] == "ok" else f"{r['tool']} — **{r['status']}**: {r['reason']}"
        cells = [f"[{fmt(r['figures'][c])}]({link})" if c in r["figures"] else "" for c in cols]
        cells += [f"**{r['note']}**" if r["note"] else ""] if notes else []
        lines.append("| " + " | ".join(_cell(x) for x in [tool, *cells, r["version"], r["recipe"]]) + " |")
    return lines


def section(f: Path, d: dict, link: str) -> list[str]:
    if "problems" in d:
        return [f"### {d['benchmark']}", "", f"[{link}]({link}) does not validate: " + "; ".join(d["problems"][:5]), ""]
    m, load = d["machine"], d["load"]
    commit = (d["git"].get("commit") or "?")[:8] + (" + local changes" if d["git"].get("dirty") else "")
    flags = []
    if d["preset"] == "quick":
        flags.append("**quick preset: tiny inputs, the figures only show that it runs**")
    if load["contended"]:
        flags.append(f"**contended** (other processes took {load.get('others_cpu_share')} of the CPU; "
                     f"load before {load['before']})")
    if d["status"] == "failed":
        flags.append(f"**failed**: {d['error']}")
    meta = (f"`python -m benchmarks run {d['benchmark']}`{' --quick' if d['preset'] == 'quick' else ''} · "
            f"{d['date']} · commit {commit} · {d['seconds']:g} s · engine {m.get('engine') or '–'}, "
            f"precision {m.get('precision') or '–'} · [{f.name}]({link})")
    out = [f"### {d['title']}", "", meta, ""]
    out += [" · ".join(flags), ""] if flags else []
    out += [*table(d, link), ""]
    out += [f"- {n}" for n in d["notes"]] + ([""] if d["notes"] else [])
    return out


def machine_line(results: list[tuple[Path, dict]]) -> str:
    ok = [d for _, d in results if "machine" in d]
    if not ok:
        return ""
    m = ok[-1]["machine"]
    v = m["versions"]
    return (f"{m['cpu_model']}, {m['cores']} cores, flags {' '.join(m['flags'])}; Python {m['python']}, "
            f"torch {v.get('torch')}, onnxruntime {v.get('onnxruntime')}, timm {v.get('timm')}, "
            f"fastai {v.get('fastai') or '–'}")


def render(results: Path, output: Path) -> str:
    parts = []
    for kind, items in load_results(results).items():
        parts += [f"## CPU kind `{kind}`", "", machine_line(items), ""]
        for f, d in items:
            parts += section(f, d, os.path.relpath(f, output.parent))
    body = "\n".join(parts) if parts else "_No results yet: run `python -m benchmarks run`, then `report`._\n"
    return TEMPLATE.read_text().replace(MARK, body.rstrip() + "\n")


def write_report(results: Path, output: Path | None = None) -> Path:
    output = output or REPO / "BENCHMARKS.md"
    text = render(results, output)
    tmp = output.with_name(f".{output.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, output)
    return output
