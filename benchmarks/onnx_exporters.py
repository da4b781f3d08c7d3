"""TorchScript (``dynamo=False``) vs dynamo ONNX exporter for the extraction graph (issue 16).

The library exports with the TorchScript exporter (:func:`transferlab.runtime.onnx.export_onnx`)
because it is ~10x quicker; this checks that it costs nothing at run time: export seconds of each,
the graphs onnxruntime actually runs (op counts after its optimisation: the same fused Convs),
forward-only img/s of both sessions in alternating rounds (2 threads, no spinning, as the runner),
and the largest feature difference (must be <= 1e-5). Run alone on a quiet machine:
    python benchmarks/onnx_exporters.py --backbone efficientnet_lite0 --batch 32 --rounds 5
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np


def dynamo_export(graph, example) -> bytes:
    import torch

    with warnings.catch_warnings(), torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(graph, (example,), dynamo=True, input_names=["x"], output_names=["f"])
    return prog.model_proto.SerializeToString()


def session(proto: bytes, threads: int, optimized: Path | None = None):
    import onnxruntime as ort

    o = ort.SessionOptions()
    o.intra_op_num_threads, o.inter_op_num_threads, o.log_severity_level = threads, 1, 3
    o.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if optimized is not None:
        o.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(proto, o, providers=["CPUExecutionProvider"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()

    import onnx
    import torch

    from transferlab.models.registry import create_backbone
    from transferlab.runtime.onnx import _NHWCFeatures, export_onnx

    torch.set_num_threads(a.threads)
    bb = create_backbone(a.backbone)
    s = bb.data_config.input_size
    graph = _NHWCFeatures(bb.model).eval()
    example = torch.zeros((a.batch, s, s, 3), dtype=torch.uint8)
    out: dict = {"backbone": a.backbone, "batch": a.batch, "threads": a.threads, "torch": torch.__version__}
    protos = {}
    for name, fn in (("torchscript", export_onnx), ("dynamo", dynamo_export)):
        t0 = time.perf_counter()
        protos[name] = fn(graph, example)
        out[f"{name}_export_seconds"] = round(time.perf_counter() - t0, 2)
    x = torch.randint(0, 256, example.shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0)).numpy()
    with tempfile.TemporaryDirectory() as tmp:
        sess = {}
        for name, proto in protos.items():
            opt = Path(tmp) / f"{name}.onnx"
            sess[name] = session(proto, a.threads, opt)
            ops = collections.Counter(n.op_type for n in onnx.load(str(opt)).graph.node)
            out[f"{name}_optimised_ops"] = dict(sorted(ops.items()))
    feats = {k: v.run(None, {"x": x})[0] for k, v in sess.items()}
    out["max_abs_feature_diff"] = float(np.abs(feats["torchscript"] - feats["dynamo"]).max())
    rates: dict[str, list[float]] = {k: [] for k in sess}
    for _ in range(a.rounds):
        for k, v in sess.items():
            t0 = time.perf_counter()
            for _ in range(4):
                v.run(None, {"x": x})
            rates[k].append(round(4 * a.batch / (time.perf_counter() - t0), 1))
    out["img_s_rounds"] = rates
    out["img_s_best"] = {k: max(v) for k, v in rates.items()}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
