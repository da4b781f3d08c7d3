"""Extraction speed: the lesson's naive loop, transferlab's pipeline and the forward-only limit,
per engine, on the same photos (``transferlab bench``, which times (b) and (c) in alternation so a
drift of the machine's speed does not bias b/c; see ``transferlab.apps.bench``)."""

from __future__ import annotations

from .core import BenchError, Preset, Result, Row, benchmark
from .machine import version
from .tools import tl

ENGINES = ("torch", "onnxruntime")


def _bench(p: Preset, args: list[str], tag: str) -> dict:
    return tl("bench", *args, cache=p.work / f"cache-{tag}", timeout=p.pick(300, 1200)).out


def _engine_row(r: dict, recipe: str) -> Row:
    s = r["settings"]
    row = Row(f"transferlab pipeline, {s['engine']}", f"transferlab {version('transferlab')}", recipe)
    row.add("(b) pipeline", r["pipeline"]["img_s"], "img/s", 1)
    row.add("(c) forward-only limit", r["limit"]["img_s"], "img/s", 1)
    row.add("b/c", r["ratios"]["b/c"], "x")
    if "b/a" in r["ratios"]:
        row.add("b/a", r["ratios"]["b/a"], "x")
    row.add("one-off setup", s.get("setup_seconds"), "s", 1).add("peak RSS", r.get("peak_rss_mb"), "MB", 0)
    row.settings = {k: s.get(k) for k in ("engine", "bf16", "channels_last", "compile", "batch_size",
                                         "torch_threads", "decode_workers", "decode_nice")} | {"images": r["images"]}
    return row


@benchmark("extraction", area="speed", title="Feature extraction speed", minutes=2)
def extraction(p: Preset) -> Result:
    """(a) naive loop, (b) pipeline, (c) forward-only limit per engine, and every engine's forward rate."""
    data = p.data / "petimages"
    if not data.is_dir():
        raise BenchError(f"PetImages not found at {data}")
    base = ["--data", data, "--backbone", "efficientnet_lite0", "--batch-size", p.pick("16", "32")]
    n, naive = p.pick(("64", "8"), ("2048", "128"), (None, "256"))  # long: all 5,999 photos
    limit = ["--limit", n] if n else []
    first = _bench(p, [*base, *limit, "--naive-limit", naive], "auto")
    cmd = f"transferlab bench --data petimages {' '.join(limit)} --naive-limit {naive}"
    a = Row("naive loop (the lesson's)", f"torch {version('torch')}, torchvision {version('torchvision')}",
            "ImageFolder loader + Resize/CenterCrop/ToTensor, DataLoader(num_workers=0), eager fp32 NCHW")
    a.add("(a) naive", first["naive"]["img_s"], "img/s", 1).add("peak RSS", first["naive"]["peak_rss_mb"], "MB", 0)
    a.settings = {"images": first["naive"]["images"], "command": cmd}
    rows = [a, _engine_row(first, cmd + "  (engine auto: this machine's verdict)")]
    ran = first["settings"]["engine"]
    for e in () if p.quick else ENGINES:  # quick: the auto run only (bench's flags have tests of their own)
        if e != ran:
            r = _bench(p, [*base, "--limit", "1024", "--naive-limit", "0", "--no-engines",
                           "--engine", e], e)
            rows.append(_engine_row(r, f"transferlab bench --engine {e} --no-engines --naive-limit 0"))
    for label, rate in (first.get("engines") or {}).items():
        fwd = Row(f"forward only, {label}", f"transferlab {version('transferlab')}",
                  "bench's engine table: pre-decoded batches, alternating rounds, best round")
        fwd.add("forward only", rate["img_s"], "img/s", 1).add("one-off setup", rate["setup_seconds"], "s", 1)
        rows.append(fwd)
    s = first["settings"]
    return Result(rows, settings={"data": str(data), "backbone": first["backbone"], "input": first["input"],
                                  "verdict": first.get("verdict")},
                  notes=[f"engine auto chose {ran} here"], engine=ran,
                  precision="bf16" if s.get("bf16") else "fp32")
