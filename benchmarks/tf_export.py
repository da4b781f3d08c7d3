"""Issue 24: every export format of three Oxford-IIIT Pet runs, measured in one process.

    python benchmarks/tf_export.py [--data DIR] [--work /tmp/tf-export-bench] [--budget 3m]

Trains on the official trainval split (or reuses WORK's runs): a linear probe (Lite0), a short
fine-tune (Lite0, 1 epoch) and an ``auto`` search limited to Lite0 + MobileNetV2 (an ensemble or
view). Exports each as ONNX + SavedModel + LiteRT into one folder, the parity check running on
100 photos of the official test split, and prints per format: max |Δp| and top-1 agreement
against PyTorch, size, img/s (onnxruntime, TensorFlow, LiteRT float32 / small; batch 32, the
best of two passes), then accuracy on the whole test split (760 photos, pixels decoded by the
training pipeline) for PyTorch, onnxruntime and both LiteRT files. Writes WORK/report.json.
Name the CPU kind with the figures; on a shared machine they are only indicative.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "oxford-pets-subset"


def cpu_kind() -> str:
    flags = set(Path("/proc/cpuinfo").read_text().split()) if Path("/proc/cpuinfo").exists() else set()
    return "AMX" if "amx_bf16" in flags else "AVX512-BF16" if "avx512_bf16" in flags else "AVX2" if "avx2" in flags \
        else "unknown"


def runs(data: Path, work: Path, budget: str, only: list[str]) -> dict[str, Path]:
    """The three runs, trained once (an existing run directory is reused)."""
    from transferlab.training.api import train

    plans = {"linear": dict(mode="linear"),
             "finetune": dict(mode="finetune", epochs=1),
             "auto": dict(mode="auto", budget=budget, members=("efficientnet_lite0@224", "mobilenet_v2@224"),
                          max_members=2)}
    out = {}
    for name, kw in plans.items():
        if name not in only:
            continue
        d = work / "runs" / name
        if not (d / "config.json").is_file():
            t0 = time.perf_counter()
            train(data, backbone="efficientnet_lite0", out=d, progress=False, **kw)
            print(f"trained {name} in {time.perf_counter() - t0:.0f} s", flush=True)
        out[name] = d
    return out


def test_split(data: Path):
    from transferlab.data.datasets import load_dataset

    return load_dataset(data, format="oxford-pets", split="test")


def accuracy(run, folder: Path, test) -> dict:
    """Accuracy on the test split of PyTorch, onnxruntime and the two LiteRT files, all on the
    same pixels (decoded once by the training pipeline)."""
    from transferlab.data.loader import image_array
    from transferlab.inference import ExportedModel, LiteRTModel

    pixels = np.stack([image_array(p, run.data_config) for p in test.paths])
    y = np.asarray(test.labels)
    engines = {"pytorch": run._forward, "onnxruntime": ExportedModel(folder)._forward,
               "litert float32": LiteRTModel(folder)._forward, "litert small": LiteRTModel(folder, small=True)._forward}
    out = {}
    for name, fn in engines.items():
        p = np.concatenate([fn(pixels[i:i + 32])[0] for i in range(0, len(pixels), 32)])
        out[name] = float((p.argmax(1) == y).mean())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=SHARED)
    ap.add_argument("--work", type=Path, default=Path("/tmp/tf-export-bench"))
    ap.add_argument("--budget", default="3m", help="the auto search's budget")
    ap.add_argument("--runs", default="linear,finetune,auto", help="which of the three runs")
    a = ap.parse_args()
    from transferlab.export import export_tf
    from transferlab.inference.load import load

    test = test_split(a.data)
    verify = test.paths[:: max(1, len(test) // 100)][:100]
    report = {"cpu": cpu_kind(), "runs": {}}
    for name, run_dir in runs(a.data, a.work, a.budget, a.runs.split(",")).items():
        run = load(run_dir)
        t0 = time.perf_counter()
        r = export_tf(run, a.work / "exports" / name, formats=("onnx", "savedmodel", "tflite"), verify_images=verify,
                      overwrite=True)
        row = {"backbone": run.backbone.name, "export_s": round(time.perf_counter() - t0, 1), **r.to_dict(),
               "onnx_size_bytes": (Path(r.out_dir) / "model.onnx").stat().st_size,
               "test_accuracy": accuracy(run, Path(r.out_dir), test), "test_images": len(test)}
        report["runs"][name] = row
        print(f"\n== {name}: {run.backbone.name}  (export {row['export_s']} s, CPU {report['cpu']})")
        for line in r.lines()[:-1]:
            print(line)
        print(f"  model.onnx size {row['onnx_size_bytes'] / 1e6:.1f} MB")
        print("  test accuracy (" + str(len(test)) + " photos): "
              + ", ".join(f"{k} {v:.2%}" for k, v in row["test_accuracy"].items()), flush=True)
    (a.work / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nwritten: {a.work / 'report.json'}")


if __name__ == "__main__":
    main()
