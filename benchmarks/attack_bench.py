"""Issue 6 benchmark: targeted attacks on many photos, success after 8-bit rounding, transfer.

Example (the BENCHMARKS command)::

    .venv/bin/python benchmarks/attack_bench.py --data /work/shared/data/petimages/Dog --n 200 \\
        --target "Siamese cat" --methods pgd,fgsm,optimize --eps 2/255 --transfer-to mobilenet_v2 \\
        --out /tmp/issue6/bench --json-out benchmarks/attack_bench.json

Photos are taken in numeric-id order (0.jpg, 1.jpg, ...), attacked in batches on the
preprocessed 224x224 input, rounded to 8 bits and saved as PNG. Success is counted twice: on the
rounded tensor (as the attack scores it) and by re-reading every saved PNG through the normal
prediction path (what `transferlab classify` would say). Unreadable photos are listed, not counted.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from transferlab.attack import AttackSpec, _Net, distortion, eps_label, parse_eps, run_attack, save_png
from transferlab.pipeline import iter_batches
from transferlab.run import load


def numeric_sorted(folder: Path) -> list[Path]:
    exts = (".jpg", ".jpeg", ".png")
    files = [p for p in folder.iterdir() if p.suffix.lower() in exts and p.stem.isdigit()]
    return sorted(files, key=lambda p: int(p.stem))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--target", default="Siamese cat")
    ap.add_argument("--methods", default="pgd,fgsm,optimize")
    ap.add_argument("--eps", default="2/255")
    ap.add_argument("--steps", type=int, default=20, help="PGD steps")
    ap.add_argument("--optimize-steps", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--transfer-to", default="mobilenet_v2")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--json-out", type=Path)
    a = ap.parse_args()

    files = numeric_sorted(a.data)[: a.n]
    run = load(a.backbone)
    net = _Net(run.model)
    t_idx = run.class_index(a.target)
    eps = parse_eps(a.eps)
    methods = a.methods.split(",")
    stats = {m: {"ok": [], "l2": [], "linf": [], "psnr": [], "seconds": 0.0, "pngs": [], "refined": 0}
             for m in methods}
    skipped: list[tuple[str, str]] = []
    clean_target = 0
    n_ok = 0
    t_all = time.perf_counter()
    for batch in iter_batches([str(f) for f in files], run.data_config, a.batch_size):
        skipped += [(str(files[j]), why) for j, why in batch.failed]
        if not batch.indices:
            continue
        x = batch.pixels.contiguous()
        y = torch.full((len(x),), t_idx, dtype=torch.long)
        logits0 = net.score(x)
        clean_target += int((logits0.argmax(1) == t_idx).sum())
        n_ok += len(x)
        for m in methods:
            steps = a.optimize_steps if m == "optimize" else a.steps
            spec = AttackSpec.make(m, eps if m != "optimize" else "default", steps, targeted=True, seed=0)
            t0 = time.perf_counter()
            res = run_attack(net, x, y, spec, logits_clean=logits0)
            st = stats[m]
            st["seconds"] += time.perf_counter() - t0
            st["refined"] += res.refined
            d = distortion(res.x_adv.cpu(), x)
            st["ok"] += res.success.cpu().tolist()
            st["l2"] += d["l2"].tolist()
            st["linf"] += d["linf"].tolist()
            st["psnr"] += d["psnr"].tolist()
            for j, xi in zip(batch.indices, res.x_adv.cpu(), strict=True):
                p = a.out / m / f"{files[j].stem}.png"
                p.parent.mkdir(parents=True, exist_ok=True)
                st["pngs"].append(save_png(xi, p))
        done = {m: f"{np.mean(stats[m]['ok']):.2f}" for m in methods}
        print(f"{n_ok}/{len(files)} images, success so far {done}, {time.perf_counter() - t_all:.0f} s",
              flush=True)

    r2 = load(a.transfer_to) if a.transfer_to else None
    t2 = r2.class_index(a.target) if r2 else None
    results = {"backbone": a.backbone, "target": run.classes[t_idx], "eps": eps, "eps_label": eps_label(eps),
               "images": n_ok, "requested": len(files), "skipped": skipped,
               "clean_predicted_as_target": clean_target, "methods": {}}
    if r2:
        p_clean, _ = r2.predict_proba([str(f) for f in files if str(f) not in dict(skipped)])
        results["transfer_clean_predicted_as_target"] = int((p_clean.argmax(1) == t2).sum())
    for m in methods:
        st = stats[m]
        pngs = [str(p) for p in st["pngs"]]
        p_file, _ = run.predict_proba(pngs)  # the normal path on the saved files
        verified = p_file.argmax(1) == t_idx
        row = {
            "steps": 1 if m == "fgsm" else (a.optimize_steps if m == "optimize" else a.steps),
            "budget": "none (unconstrained)" if m == "optimize" else f"L∞ {eps_label(eps)}",
            "success_rate": float(np.mean(st["ok"])),
            "success_rate_saved_png": float(verified.mean()),
            "agree_tensor_vs_png": float(np.mean(np.array(st["ok"]) == verified)),
            "mean_target_prob_png": float(p_file[:, t_idx].mean()),
            "mean_l2": float(np.mean(st["l2"])),
            "mean_linf_255": float(np.mean(st["linf"]) * 255),
            "max_linf_255": float(np.max(st["linf"]) * 255),
            "mean_psnr_db": float(np.mean(st["psnr"])),
            "seconds_per_image": st["seconds"] / max(n_ok, 1),
            "refined_images": st["refined"],
        }
        if r2:
            p2, _ = r2.predict_proba(pngs)
            hit = p2.argmax(1) == t2
            row["transfer_rate"] = float(hit.mean())
            row["transfer_rate_among_successes"] = float(hit[verified].mean()) if verified.any() else 0.0
            row["transfer_mean_target_prob"] = float(p2[:, t2].mean())
        results["methods"][m] = row
    results["seconds_total"] = round(time.perf_counter() - t_all, 1)
    print(json.dumps(results["methods"], indent=2))
    if a.json_out:
        a.json_out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\n| method | budget | steps | success (8-bit PNG) | mean L2 | mean L∞ | PSNR dB | s/img | "
          f"transfer → {a.transfer_to} |")
    print("|---|---|---|---|---|---|---|---|---|")
    for m, r in results["methods"].items():
        print(f"| {m} | {r['budget']} | {r['steps']} | {r['success_rate_saved_png']:.1%} | "
              f"{r['mean_l2']:.2f} | {r['mean_linf_255']:.2f}/255 | {r['mean_psnr_db']:.1f} | "
              f"{r['seconds_per_image']:.2f} | "
              f"{r.get('transfer_rate', float('nan')):.1%} |")


if __name__ == "__main__":
    main()
