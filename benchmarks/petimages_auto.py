"""Issue 15 on PetImages (seeded 80/20: 4,799 train / 1,200 val): ``--mode auto``, calibration,
and ``review`` of the whole set with the chosen run.

    python benchmarks/petimages_auto.py [--budget 15m] [--out /tmp/petimages-auto] [--resume] [--top 4]

Prints (and writes OUT/report.json): the leaderboard and choice (CV on the 4,799 training photos
only), the val accuracy of the chosen run, ECE before/after temperature scaling (T fitted on the
val logits, as every run with validation data does), the ``--top`` leaderboard rows and the best
single backbone refitted as their own runs with their val accuracy, and the review's top suspects
(contact sheet in OUT/review).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from transferlab.evaluation.review import ReviewOptions, review
from transferlab.training.api import train

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "petimages"


def refit(row: dict, run, data: Path) -> dict:
    """Refit one leaderboard row on the 4,799 training photos exactly as the search's final fit
    does (finished rows reused: no cross-validation again) and score it on the 1,200 val photos."""
    from transferlab.data.datasets import load_dataset
    from transferlab.training.auto import Search, final_fit
    from transferlab.training.job import Job
    from transferlab.training.options import AutoOptions, RunOptions

    tr, va = load_dataset(data).train_val_split(0.2, 0)
    job = Job(run.backbone, tr, va, RunOptions(), AutoOptions(resume="yes"), Path("."), progress=False)
    fitted = final_fit(Search(job, job.options), row)
    y = va.labels[fitted.val_ok]
    return {"candidate": row["candidate"], "cv_accuracy": row["cv_accuracy"],
            "val_accuracy": float((fitted.val_probs.argmax(1) == y).mean())}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", default="15m")
    ap.add_argument("--out", type=Path, default=Path("/tmp/petimages-auto"))
    ap.add_argument("--data", type=Path, default=SHARED)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--top", type=int, default=4)
    a = ap.parse_args()
    t0 = time.perf_counter()
    run = train(a.data, mode="auto", budget=a.budget, out=a.out / "auto", overwrite=True,
                resume=(a.out / "auto") if a.resume else None, progress=True)
    wall = time.perf_counter() - t0
    auto, cal = run.config["train"]["auto"], run.config["calibration"]
    for r in auto["leaderboard"]:
        print(f"{r['rank']!s:>3} {r['candidate']:<70} {r['cv_accuracy']:.4f} ± {r['cv_sd']:.4f}  {r['status']}")
    print(f"chosen: {auto['why']}\ntrain wall {wall:.0f} s (budget {a.budget})")
    print(f"val accuracy {run.metrics['val_accuracy']:.4f} on {run.metrics['val']['n']} images; ECE "
          f"{cal['ece_before']:.4f} -> {cal['ece_after']:.4f} (T = {cal['temperature']:.2f}, {cal['errors']} errors)")
    report = {"budget": a.budget, "train_wall_s": round(wall, 1), "chosen": auto["chosen"], "why": auto["why"],
              "val_accuracy": run.metrics["val_accuracy"], "calibration": cal, "rows": []}
    scored = [r for r in auto["leaderboard"] if r["rank"] != ""]
    single = next((r for r in scored if "+" not in r["members"]), None)
    for row in scored[: a.top] + ([single] if single and single not in scored[: a.top] else []):
        res = refit(row, run, a.data)
        report["rows"].append(res)
        print(f"refit {res['candidate']:<70} CV {res['cv_accuracy']:.4f}  val {res['val_accuracy']:.4f}")
    t1 = time.perf_counter()
    rev = review(run, a.data, out=a.out / "review", options=ReviewOptions(), progress=True)
    report["review"] = {k: rev[k] for k in ("images", "suspects_found", "cv_accuracy", "files")}
    report["review"]["top24"] = rev["suspects"][:24]
    print(f"review: {rev['suspects_found']} suspects among {rev['images']} images "
          f"({time.perf_counter() - t1:.0f} s); contact sheet {rev['files'][-1]}")
    for s in rev["suspects"][:24]:
        print(f"  {s['rank']:>2} {Path(s['path']).parent.name}/{Path(s['path']).name:<10} given {s['given']:<4} "
              f"suggested {s['suggested']:<4} score {s['score']:.3f}")
    (a.out / "report.json").write_text(json.dumps(report, indent=2, default=float))


if __name__ == "__main__":
    main()
