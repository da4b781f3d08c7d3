"""Demo section: feature maps of chelsea the cat at a shallow, a middle and a deep block."""

from __future__ import annotations

from pathlib import Path


def featuremaps_section(out_dir: Path, quiet: bool = True) -> dict:
    """Feature maps of chelsea the cat at a shallow, a middle and a deep block."""
    from PIL import Image
    from skimage import data

    from ...explain.featuremaps import default_layer, draw, feature_maps, list_layers
    from ...inference.load import load

    out_dir = Path(out_dir) / "featuremaps"
    out_dir.mkdir(parents=True, exist_ok=True)
    run = load("efficientnet_lite0")
    names = [li.name for li in list_layers(run)]
    photo = Image.fromarray(data.chelsea())
    figs, lines = [], []
    for layer in (names[2], default_layer(names), names[-2]):
        fm = feature_maps(run, photo, layer)
        c, h, w = fm.activations.shape
        figs.append(draw(fm, out_dir / f"chelsea_{layer.replace('.', '_')}.png",
                         f"efficientnet_lite0 · {layer} ({c}x{h}x{w}) · chelsea"))
        lines.append(f"{layer}: {c} channels at {h}x{w}; most active channels {fm.top_channels[:5]}")
    return {"title": "Feature maps of chelsea (efficientnet_lite0)", "figures": figs, "text": lines}
