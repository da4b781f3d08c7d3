"""bf16 vs fp32 features: linear-probe accuracy on PetImages must move by < 0.2 points.

Extracts efficientnet_lite0 features with transferlab's fast pipeline twice (TRANSFERLAB_BF16=0,
then 1; each has its own cache), splits 80/20 (stratified, seed 0, the data module's split) and fits
StandardScaler + LogisticRegression at a few C. Prints one JSON object.
Usage: python benchmarks/bf16_accuracy.py [DATA] [--cache DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "petimages"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", nargs="?", type=Path, default=SHARED)
    ap.add_argument("--cache", type=Path, default=None, help="feature cache (default: a temp dir)")
    ap.add_argument("--backbone", default="efficientnet_lite0")
    a = ap.parse_args()
    os.environ["TRANSFERLAB_CACHE"] = str(a.cache or tempfile.mkdtemp(prefix="tl-bf16-"))

    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from transferlab.data.datasets import load_dataset
    from transferlab.features import extract
    from transferlab.models.registry import create_backbone

    bb = create_backbone(a.backbone)
    ds = load_dataset(a.data)
    tr, va = ds.train_val_split(0.2, seed=0)
    out: dict = {"data": str(a.data), "backbone": a.backbone, "train": len(tr), "val": len(va)}
    for tag, flag in (("fp32", "0"), ("bf16", "1")):
        os.environ["TRANSFERLAB_BF16"] = flag
        t0 = time.perf_counter()
        ftr = extract(bb, tr.paths, progress=False)
        fva = extract(bb, va.paths, progress=False)
        secs = time.perf_counter() - t0
        ytr, yva = tr.labels[ftr.ok], va.labels[fva.ok]
        accs = {}
        for c in (0.1, 1.0):
            clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000, random_state=0))
            clf.fit(ftr.features, ytr)
            accs[str(c)] = round(100 * float((clf.predict(fva.features) == yva).mean()), 3)
        out[tag] = {"val_acc_by_C": accs, "extract_seconds": round(secs, 1),
                    "extracted": ftr.extracted + fva.extracted,
                    "skipped": len(ftr.skipped) + len(fva.skipped)}
        out[tag + "_features"] = (ftr.features, fva.features)
    import numpy as np

    f32, b16 = out.pop("fp32_features"), out.pop("bf16_features")
    cos = [float(np.mean(np.sum(x * y, 1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))))
           for x, y in zip(f32, b16, strict=True)]
    out["feature_cosine_mean"] = round(min(cos), 5)
    out["delta_points_by_C"] = {c: round(out["bf16"]["val_acc_by_C"][c] - out["fp32"]["val_acc_by_C"][c], 3)
                                for c in out["fp32"]["val_acc_by_C"]}
    out["ok"] = all(abs(d) < 0.2 for d in out["delta_points_by_C"].values())
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
