"""Demo section: ImageNet classification of scikit-image's bundled photos."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from ..._io import atomic_write

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
    from ...inference.load import from_backbone

    paths = sample_images(out)
    res = from_backbone("efficientnet_lite0").predict(list(paths.values()), top_k=3)
    lines = [
        f"{Path(r['path']).stem}: " + ", ".join(f"{t['label']} {t['score']:.2f}" for t in r["top"]) for r in res
    ]
    return {"title": "ImageNet classification (efficientnet_lite0, bundled weights)",
            "figures": list(paths.values()), "text": lines}
