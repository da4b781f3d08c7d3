"""Demo section: the lesson's 'very different images' challenge on scikit-learn's handwritten
digits, pretrained features against raw pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def digits_section(out: Path, quiet: bool = True) -> dict:
    """The lesson's 'very different images' challenge: pretrained features vs raw pixels."""
    from sklearn.datasets import load_digits

    from ...data.datasets import load_dataset
    from ...probe import fit_linear_probe
    from ...training.api import train
    from ...training.baselines import digits_folder

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
    # the same probe as the features' run, C chosen on the same validation photos
    _, c, scores = fit_linear_probe(xtr, digits.target[idx(tr)], xva, digits.target[idx(va)], 10)
    pix_acc = float(scores[c])
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
