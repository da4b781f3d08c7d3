"""``transferlab demo``: the whole tool on bundled data, offline, in a few minutes on 2 cores,
ending in ``report.html``. Each pipeline stage contributes one section."""

from __future__ import annotations

import html
import time
from pathlib import Path

import numpy as np
from PIL import Image

from .._io import atomic_write

SAMPLES = ("chelsea", "coffee", "astronaut")



def sample_images(out: Path) -> dict[str, Path]:
    """scikit-image's bundled photos (chelsea the cat, coffee, astronaut) written as JPEG files."""
    from skimage import data

    d = out / "samples"
    d.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in SAMPLES:
        p = d / f"{name}.jpg"
        if not p.exists():
            atomic_write(p, lambda t, n=name: Image.fromarray(getattr(data, n)()).save(t, format="JPEG", quality=95))
        paths[name] = p
    return paths


def classify_section(out: Path, quiet: bool = True) -> dict:
    from ..evaluate.predict import predict
    from ..run import from_backbone

    paths = sample_images(out)
    res = predict(from_backbone("efficientnet_lite0"), list(paths.values()), top_k=3)
    lines = [
        f"{Path(r['path']).stem}: " + ", ".join(f"{t['label']} {t['score']:.2f}" for t in r["top"]) for r in res
    ]
    return {"title": "ImageNet classification (efficientnet_lite0, bundled weights)",
            "figures": list(paths.values()), "text": lines}


def digits_folder(out: Path, size: int = 64) -> Path:
    """scikit-learn's 1,797 real 8x8 handwritten digits as a class-per-folder PNG dataset."""
    from sklearn.datasets import load_digits

    root = out / "digits"
    digits = load_digits()
    if len(list(root.glob("*/*.png"))) == len(digits.images):
        return root
    for i, (img, y) in enumerate(zip(digits.images, digits.target)):
        d = root / str(y)
        d.mkdir(parents=True, exist_ok=True)
        # Ink is high in load_digits; draw dark ink on white like a scanned page.
        px = (255 - img * (255 / 16)).astype(np.uint8)
        Image.fromarray(px, "L").resize((size, size), Image.Resampling.BICUBIC).save(d / f"{i}.png")
    return root


def digits_section(out: Path, quiet: bool = True) -> dict:
    """The lesson's 'very different images' challenge: pretrained features vs raw pixels."""
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from ..data.datasets import load_dataset
    from ..training.api import train

    root = digits_folder(out)
    ds = load_dataset(root)
    run = train(ds, backbone="efficientnet_lite0", mode="linear", val_fraction=0.2, seed=0,
                out=out / "digits-run", overwrite=True, progress=not quiet)  # the demo's own folder
    feat_acc = float(run.metrics["val_accuracy"])
    # Raw pixels, the same seeded split (image i of load_digits is file i.png).
    tr, va = ds.train_val_split(0.2, 0)
    digits = load_digits()
    idx = lambda sub: np.array([int(Path(p).stem) for p in sub.paths])  # noqa: E731
    xtr, xva = digits.data[idx(tr)], digits.data[idx(va)]
    sc = StandardScaler().fit(xtr)
    lr = LogisticRegression(max_iter=5000).fit(sc.transform(xtr), digits.target[idx(tr)])
    pix_acc = float(lr.score(sc.transform(xva), digits.target[idx(va)]))
    winner = "pretrained ImageNet features" if feat_acc > pix_acc else "raw pixels"
    margin = abs(feat_acc - pix_acc) * 100
    lines = [
        f"linear head on efficientnet_lite0 features: {feat_acc:.2%} validation accuracy",
        f"logistic regression on raw 8x8 pixels:       {pix_acc:.2%}",
        f"winner: {winner} by {margin:.1f} points "
        + ("(ImageNet features transfer even to tiny handwritten digits)" if winner.startswith("pre") else
           "(8x8 digits are far from ImageNet photos: the raw pixels already separate them)"),
    ]
    return {"title": "Very different images: handwritten digits (scikit-learn, 1,797 real 8x8 scans)",
            "figures": [run.path / "confusion.png"], "text": lines,
            "data": {"features_accuracy": feat_acc, "pixels_accuracy": pix_acc, "winner": winner}}


def run_demo(out: str | Path = "demo-out", quiet: bool = False, log=print) -> Path:
    """Run every section, write ``report.html``; returns its path. Logs each section's seconds and
    the total (the target is 2 minutes on 2 quiet cores)."""
    start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sections = []
    from ..attack import single as attack
    from ..explain import dream
    from ..explain import featuremaps as inspect

    # Each stage contributes one section: f(out_dir, quiet) -> {"title", "figures", "text"}.
    steps = [classify_section, digits_section, inspect.demo_section, dream.demo_section, attack.demo_section]
    for step in steps:
        t0 = time.perf_counter()
        sec = step(out, quiet=quiet)
        sec["seconds"] = round(time.perf_counter() - t0, 1)
        sections.append(sec)
        log(f"== {sec['title']} ({sec['seconds']} s)")
        for line in sec.get("text", []):
            log(f"   {line}")
    total = round(time.perf_counter() - start, 1)
    report = write_report(out, sections, total)
    figures = [str(f) for s in sections for f in s.get("figures", [])]
    log("figures:")
    for f in figures:
        log(f"  {f}")
    log(f"report: {report}")
    log(f"total: {total} s ({' + '.join(str(s['seconds']) for s in sections)} s in sections)")
    return report


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
