"""Is onnxruntime static int8 (QDQ) worth offering as ``--precision int8``? (issue 16, item 3)

Exports ``model.features`` the way the library runs it (uint8 NHWC in, pooled features out,
fixed batch shape; :func:`transferlab.runtime.onnx.export_onnx`), quantises it with
``onnxruntime.quantization.quantize_static`` (QDQ, per-channel int8 weights, uint8 or int8
activations: ``--activation``)
calibrated on ``--calib`` of the user's own images (a CalibrationDataReader over decoded batches),
then reports, on images the calibration never saw:

* correctness: per-image cosine of int8 vs fp32 features; top-1 agreement of the ImageNet head;
  linear-probe accuracy (StandardScaler + LogisticRegression C=1, stratified 80/20, seed 0) on
  fp32 features vs int8 features (the offer needs the same accuracy to ~0.2 points, as bf16 had);
* speed: forward-only img/s of both sessions on the same pre-decoded batches, in alternating
  rounds (2 threads, no spin-waiting, as the library runs onnxruntime), plus export/quantise time.

Run it alone on a quiet machine (timings under load are meaningless):
    python benchmarks/int8_probe.py ../shared/data/petimages --calib 320 --eval 2000 --json /tmp/int8.json
A smoke test of the script itself (seconds): --calib 8 --eval 64 --rounds 1
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "petimages"


def decode_batches(paths, dc, batch: int) -> tuple[list[np.ndarray], list[int]]:
    """Readable images as full uint8 NHWC batches (a short tail is dropped), and their indices."""
    from transferlab.data.images import BadImage
    from transferlab.data.loader import decode_array

    arrs, ok = [], []
    for i, p in enumerate(paths):
        try:
            arrs.append(decode_array(p, dc))
            ok.append(i)
        except (OSError, BadImage):
            continue
    n = len(arrs) // batch * batch
    return [np.stack(arrs[i:i + batch]) for i in range(0, n, batch)], ok[:n]


class Calibration:
    """onnxruntime's CalibrationDataReader protocol over pre-decoded batches."""

    def __init__(self, batches: list[np.ndarray]):
        self.it = iter(batches)

    def get_next(self):
        b = next(self.it, None)
        return None if b is None else {"x": b}

    def rewind(self):  # not needed for MinMax; kept for other calibrators
        pass


def session(path: str, threads: int):
    import onnxruntime as ort

    o = ort.SessionOptions()
    o.intra_op_num_threads, o.inter_op_num_threads, o.log_severity_level = threads, 1, 3
    o.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])


def build_models(bb, batch: int, calib: list[np.ndarray], tmp: Path, method: str, activation: str) -> dict:
    import torch
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from transferlab.runtime.onnx import _NHWCFeatures, export_onnx

    s = bb.data_config.input_size
    t0 = time.perf_counter()
    proto = export_onnx(_NHWCFeatures(bb.model).eval(), torch.zeros((batch, s, s, 3), dtype=torch.uint8))
    fp32, pre, int8 = tmp / "fp32.onnx", tmp / "pre.onnx", tmp / "int8.onnx"
    fp32.write_bytes(proto)
    export_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    quantize_static(str(pre), str(int8), Calibration(calib), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=getattr(QuantType, activation), weight_type=QuantType.QInt8,
                    calibrate_method=getattr(CalibrationMethod, method), op_types_to_quantize=["Conv"])
    return {"fp32": str(fp32), "int8": str(int8), "export_seconds": round(export_s, 2),
            "quantize_seconds": round(time.perf_counter() - t0, 2)}


def features(sess, batches: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([sess.run(None, {"x": b})[0] for b in batches])


def speed(sessions: dict, batches: list[np.ndarray], rounds: int) -> dict:
    for s in sessions.values():
        s.run(None, {"x": batches[0]})  # warm-up
    rates: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(rounds):
        for k, s in sessions.items():
            t0 = time.perf_counter()
            for b in batches:
                s.run(None, {"x": b})
            rates[k].append(len(batches) * len(batches[0]) / (time.perf_counter() - t0))
    return {k: {"img_s_best": round(max(v), 1), "rounds": [round(x, 1) for x in v]} for k, v in rates.items()}


def probe_accuracy(f32: np.ndarray, i8: np.ndarray, y: np.ndarray) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(np.unique(y)) < 2:
        return {}
    tr, va = train_test_split(np.arange(len(y)), test_size=0.2, random_state=0, stratify=y)
    out = {}
    for tag, f in (("fp32", f32), ("int8", i8)):
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=3000, random_state=0))
        out[tag] = round(100 * float(clf.fit(f[tr], y[tr]).score(f[va], y[va])), 3)
    out["delta_points"] = round(out["int8"] - out["fp32"], 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", nargs="?", type=Path, default=SHARED)
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--calib", type=int, default=320, help="calibration images (never evaluated)")
    ap.add_argument("--eval", type=int, default=2000, help="evaluation images (accuracy, agreement, speed)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="alternating speed rounds")
    ap.add_argument("--method", default="MinMax", choices=["MinMax", "Entropy", "Percentile"])
    ap.add_argument("--activation", default="QUInt8", choices=["QUInt8", "QInt8"],
                    help="activations: QUInt8 (U8S8, onnxruntime's x86 default) or QInt8 (S8S8)")
    ap.add_argument("--json", type=Path, default=None, help="also write the result here")
    a = ap.parse_args()

    import torch

    from transferlab.data.datasets import load_dataset
    from transferlab.models.registry import create_backbone

    torch.set_num_threads(a.threads)
    bb = create_backbone(a.backbone)
    ds = load_dataset(a.data)
    order = np.random.default_rng(0).permutation(len(ds))  # calibration and evaluation: disjoint
    cal_paths = [ds.paths[i] for i in order[:a.calib]]
    ev_idx = order[a.calib:a.calib + a.eval]
    calib, _ = decode_batches(cal_paths, bb.data_config, a.batch)
    evb, ok = decode_batches([ds.paths[i] for i in ev_idx], bb.data_config, a.batch)
    y = ds.labels[ev_idx][ok]
    with tempfile.TemporaryDirectory(prefix="tl-int8-") as tmp:
        models = build_models(bb, a.batch, calib, Path(tmp), a.method, a.activation)
        sess = {k: session(models[k], a.threads) for k in ("fp32", "int8")}
        f32, i8 = features(sess["fp32"], evb), features(sess["int8"], evb)
        cos = (f32 * i8).sum(1) / (np.linalg.norm(f32, axis=1) * np.linalg.norm(i8, axis=1))
        with torch.no_grad():
            top = [bb.model.head(torch.from_numpy(f)).argmax(1).numpy() for f in (f32, i8)]
        result = {
            "backbone": a.backbone, "data": str(a.data), "calibration_images": len(calib) * a.batch,
            "eval_images": len(y), "method": a.method, "activation": a.activation, "threads": a.threads,
            "cpu": os.cpu_count(),
            "onnxruntime": __import__("onnxruntime").__version__, "torch": torch.__version__,
            **{k: v for k, v in models.items() if k.endswith("seconds")},
            "cosine": {"mean": round(float(cos.mean()), 5), "min": round(float(cos.min()), 5)},
            "imagenet_top1_agreement": round(float((top[0] == top[1]).mean()), 4),
            "linear_probe_accuracy": probe_accuracy(f32, i8, y),
            "speed": speed(sess, evb[:8], a.rounds),
        }
    result["speedup"] = round(result["speed"]["int8"]["img_s_best"] / result["speed"]["fp32"]["img_s_best"], 3)
    text = json.dumps(result, indent=2)
    print(text)
    if a.json:
        a.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
