"""Issue 15 on the Oxford-IIIT Pet subset: ``--mode auto`` on the official trainval split (710
photos, ~19 per breed), then the official test split (760) — touched only here, for the report,
never by the search.

    python benchmarks/oxford_auto.py [--budget 15m] [--out /tmp/oxford-auto] [--resume] [--top 6]

Prints (and writes OUT/report.json):
- the search's leaderboard and its choice (wall time of the whole ``train``);
- test accuracy of the chosen run, with and without its temperature, ECE before/after;
- for comparison, the ``--top`` best leaderboard rows and the best single backbone, each refitted
  on all of trainval the way the search's final fit does (uncalibrated) and scored on test, so the
  best single member and the ensembles stand side by side.
Feature extraction goes through the user's feature cache (run it twice: the second run extracts
nothing).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from transferlab.evaluation.calibration import ece, logits_from_probs, softmax
from transferlab.training.api import train

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "oxford-pets-subset"


def score_row(row: dict, run, data: Path) -> dict:
    """Refit one leaderboard row on all of trainval exactly as the search's final fit does (its
    finished rows reused: no cross-validation again) and score it on test."""
    from transferlab.data.datasets import load_dataset
    from transferlab.features import extract_view
    from transferlab.models.registry import create_backbone
    from transferlab.training.auto import Search, final_fit
    from transferlab.training.job import Job
    from transferlab.training.options import AutoOptions, RunOptions

    tr = load_dataset(data, split="trainval")
    train_set, empty = tr.train_val_split(0.0, 0)
    job = Job(run.backbone, train_set, empty, RunOptions(val_fraction=0), AutoOptions(resume="yes"), Path("."),
              progress=False)
    fitted = final_fit(Search(job, job.options), row)
    test = load_dataset(data, split="test")
    f = extract_view(create_backbone(row["backbone"]), test.paths, progress=False)
    probs = _softmax(fitted.head, f.features)
    y = test.labels[f.ok]
    return {"candidate": row["candidate"], "cv_accuracy": row["cv_accuracy"],
            "test_accuracy": float((probs.argmax(1) == y).mean()), "test_ece": ece(probs, y)}


def _softmax(head, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return head.eval()(torch.from_numpy(x)).softmax(-1).numpy()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", default="15m")
    ap.add_argument("--out", type=Path, default=Path("/tmp/oxford-auto"))
    ap.add_argument("--data", type=Path, default=SHARED)
    ap.add_argument("--resume", action="store_true", help="reuse the finished rows of an earlier search")
    ap.add_argument("--top", type=int, default=6, help="leaderboard rows to refit and score on test")
    a = ap.parse_args()
    t0 = time.perf_counter()
    run = train(a.data, mode="auto", budget=a.budget, val_fraction=0, out=a.out / "auto", overwrite=True,
                resume=(a.out / "auto") if a.resume else None, progress=True)
    wall = time.perf_counter() - t0
    auto = run.config["train"]["auto"]
    for r in auto["leaderboard"]:
        print(f"{r['rank']!s:>3} {r['candidate']:<70} {r['cv_accuracy']:.4f} ± {r['cv_sd']:.4f}  {r['status']}")
    print(f"chosen: {auto['why']}\ntrain wall {wall:.0f} s (budget {a.budget})")
    ds_probs, _ = run.predict_proba_paths(_test_paths(run, a.data), cache=True)
    y = _test_labels(run, a.data)
    t = run.config["calibration"]["temperature"]
    raw = softmax(logits_from_probs(ds_probs) * t)  # undo T: the uncalibrated probabilities
    report = {"budget": a.budget, "train_wall_s": round(wall, 1), "chosen": auto["chosen"], "why": auto["why"],
              "test_accuracy": float((ds_probs.argmax(1) == y).mean()), "temperature": t,
              "cv_calibration": run.config["calibration"], "test_ece_before": ece(raw, y),
              "test_ece_after": ece(ds_probs, y), "rows": []}
    print(f"test accuracy {report['test_accuracy']:.4f}; test ECE {report['test_ece_before']:.4f} -> "
          f"{report['test_ece_after']:.4f} (T = {t:.2f}, fitted on CV logits)")
    scored = [r for r in auto["leaderboard"] if r["rank"] != ""]
    single = next((r for r in scored if "+" not in r["members"]), None)
    picks = scored[: a.top] + ([single] if single and single not in scored[: a.top] else [])
    for row in picks:
        res = score_row(row, run, a.data)
        report["rows"].append(res)
        print(f"refit {res['candidate']:<70} CV {res['cv_accuracy']:.4f}  test {res['test_accuracy']:.4f}")
    (a.out / "report.json").write_text(json.dumps(report, indent=2, default=float))


def _test_paths(run, data: Path) -> list[str]:
    from transferlab.evaluation.evaluate import resolve_eval_data

    return resolve_eval_data(run, data, "test").paths


def _test_labels(run, data: Path) -> np.ndarray:
    from transferlab.evaluation.evaluate import map_labels, resolve_eval_data

    return map_labels(run, resolve_eval_data(run, data, "test"))


if __name__ == "__main__":
    main()
