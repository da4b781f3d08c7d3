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

from transferlab.attack.budget import AttackSpec, distortion, eps_label, parse_eps
from transferlab.attack.core import AttackNet, run_attack
from transferlab.data.images import save_png
from transferlab.data.loader import iter_batches, to_uint8
from transferlab.run import load


def numeric_sorted(folder: Path) -> list[Path]:
    exts = (".jpg", ".jpeg", ".png")
    files = [p for p in folder.iterdir() if p.suffix.lower() in exts and p.stem.isdigit()]
    return sorted(files, key=lambda p: int(p.stem))


def attack_all(a, files: list[Path], run, t_idx: int, eps: float, methods: list[str]) -> None:
    """Attack in batches; save each adversarial PNG and the attack seconds per method (timing.json)."""
    net = AttackNet(run.model)
    t_all = time.perf_counter()
    n_ok = 0
    # Resume: photos whose PNGs exist for every method were done by an earlier (interrupted) run.
    files = [f for f in files if not all((a.out / m / f"{f.stem}.png").exists() for m in methods)]
    for batch in iter_batches([str(f) for f in files], run.data_config, a.batch_size):
        if not batch.indices:
            continue
        x = batch.pixels.contiguous()
        y = torch.full((len(x),), t_idx, dtype=torch.long)
        logits0 = net.score(x)
        n_ok += len(x)
        done = {}
        for m in methods:
            steps = a.optimize_steps if m == "optimize" else a.steps
            spec = AttackSpec.make(m, eps if m != "optimize" else "default", steps, targeted=True, seed=0)
            t0 = time.perf_counter()
            res = run_attack(net, x, y, spec, logits_clean=logits0)
            dt = time.perf_counter() - t0
            d = a.out / m
            d.mkdir(parents=True, exist_ok=True)
            for j, xi in zip(batch.indices, res.x_adv.cpu(), strict=True):
                save_png(to_uint8(xi), d / f"{files[j].stem}.png")
            tf = d / "timing.json"
            tm = json.loads(tf.read_text()) if tf.exists() else {}
            for j in batch.indices:
                tm[files[j].stem] = dt / len(batch.indices)
            tf.write_text(json.dumps(tm))
            done[m] = f"{res.success.float().mean():.2f} ({dt / len(x):.1f} s/img)"
        el = time.perf_counter() - t_all
        print(f"{n_ok}/{len(files)} images, last batch {done}, {el:.0f} s", flush=True)


def summarize(a, files: list[Path], run, t_idx: int, eps: float, methods: list[str]) -> dict:
    """Score the saved PNGs through the normal prediction path (what `classify` says), with
    distortion against the preprocessed originals, and their transfer to a second model."""
    from transferlab.data.loader import decode

    r2 = load(a.transfer_to) if a.transfer_to else None
    t2 = r2.class_index(a.target) if r2 else None
    results = {"backbone": a.backbone, "target": run.classes[t_idx], "eps": eps, "eps_label": eps_label(eps),
               "requested": len(files), "methods": {}}
    for m in methods:
        d = a.out / m
        tm = json.loads((d / "timing.json").read_text()) if (d / "timing.json").exists() else {}
        done = [f for f in files if (d / f"{f.stem}.png").exists()]
        pngs = [str(d / f"{f.stem}.png") for f in done]
        x0 = torch.stack([decode(f, run.data_config) for f in done])
        xa = torch.stack([decode(p, run.data_config) for p in pngs])
        dist = distortion(xa, x0)
        p_clean = run.predict_proba([str(f) for f in done])
        p_file = run.predict_proba(pngs)  # the normal path on the saved files
        verified = p_file.argmax(1) == t_idx
        row = {
            "images": len(done),
            "steps": 1 if m == "fgsm" else (a.optimize_steps if m == "optimize" else a.steps),
            "budget": "none (unconstrained)" if m == "optimize" else f"L∞ {eps_label(eps)}",
            "clean_predicted_as_target": int((p_clean.argmax(1) == t_idx).sum()),
            "success_rate": float(verified.mean()),
            "failures": [f.name for f, ok in zip(done, verified, strict=True) if not ok],
            "mean_target_prob": float(p_file[:, t_idx].mean()),
            "mean_l2": float(dist["l2"].mean()),
            "mean_linf_255": float(dist["linf"].mean() * 255),
            "max_linf_255": float(dist["linf"].max() * 255),
            "mean_psnr_db": float(dist["psnr"].mean()),
            "seconds_per_image": float(np.mean([tm[f.stem] for f in done if f.stem in tm])) if tm else None,
        }
        if r2:
            p2 = r2.predict_proba(pngs)
            p2c = r2.predict_proba([str(f) for f in done])
            hit = p2.argmax(1) == t2
            row["transfer_clean_predicted_as_target"] = int((p2c.argmax(1) == t2).sum())
            row["transfer_rate"] = float(hit.mean())
            row["transfer_rate_among_successes"] = float(hit[verified].mean()) if verified.any() else 0.0
            row["transfer_mean_target_prob"] = float(p2[:, t2].mean())
        results["methods"][m] = row
    return results


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
    ap.add_argument("--summarize", action="store_true",
                    help="Only score the PNGs already in --out (e.g. after an interrupted run).")
    a = ap.parse_args()

    files = numeric_sorted(a.data)[: a.n]
    run = load(a.backbone)
    t_idx = run.class_index(a.target)
    eps = parse_eps(a.eps)
    methods = a.methods.split(",")
    t_all = time.perf_counter()
    if not a.summarize:
        attack_all(a, files, run, t_idx, eps, methods)
    results = summarize(a, files, run, t_idx, eps, methods)
    results["seconds_total"] = round(time.perf_counter() - t_all, 1)
    print(json.dumps(results["methods"], indent=2))
    if a.json_out:
        a.json_out.write_text(json.dumps(results, indent=2) + "\n")
    print("\n| method | images | budget | steps | success (8-bit PNG) | mean L2 | mean L∞ | PSNR dB "
          f"| s/img | transfer → {a.transfer_to} |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for m, r in results["methods"].items():
        sec = f"{r['seconds_per_image']:.2f}" if r["seconds_per_image"] is not None else "n/a"
        print(f"| {m} | {r['images']} | {r['budget']} | {r['steps']} | {r['success_rate']:.1%} | "
              f"{r['mean_l2']:.2f} | {r['mean_linf_255']:.2f}/255 | {r['mean_psnr_db']:.1f} | "
              f"{sec} | "
              f"{r.get('transfer_rate', float('nan')):.1%} |")


if __name__ == "__main__":
    main()
