"""``transferlab bench``: how fast is feature extraction here, and how close to the model's limit?

One run, the same images, three measurements:

(a) naive: the lesson's loop. ImageFolder's loader (PIL open + convert) with
    ``transforms.Compose([Resize, CenterCrop, ToTensor])``, ``DataLoader(num_workers=0)``, eager
    fp32 NCHW model. Measured on the first ``naive_limit`` images to keep the bench short.
(b) pipeline: transferlab's input pipeline + :class:`FeatureRunner`, features streamed to a
    sharded safetensors cache in a temporary directory exactly as ``extract`` writes them.
(c) limit: the same runner on pre-decoded uint8 batches (no decoding at all), timed in
    alternation with (b)'s chunks, so a drift of the machine's speed does not bias b/c.
engines: every engine's forward-only rate on those pre-decoded batches (torch eager fp32, torch
    eager bf16 where the hardware has it, onnxruntime fp32), side by side in alternating rounds;
    the fastest of what ``auto`` races is stored as this machine's verdict and runs (b) and (c).

Peak RSS is measured per phase (Linux ``/proc/self/clear_refs`` resets the high-water mark).
"""

from __future__ import annotations

import copy
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..data.images import BadImage, is_image_file
from ..data.loader import decode_array, default_nice, default_workers
from ..errors import TransferlabError
from ..models.classifier import Backbone
from ..models.registry import DEFAULT_BACKBONE, create_backbone
from ..options import OptionError
from ..runtime.device import default_device
from ..runtime.engine import ENGINES, engine_default, measure_engines, record_verdict, table_candidates
from ..runtime.runner import FeatureRunner, run_features
from ..runtime.verdict import backbone_arch, verdict_file


def list_images(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise TransferlabError(f"bench data not found: {root}")
    files = sorted(p for p in root.rglob("*") if p.is_file() and is_image_file(p))
    if not files:
        raise TransferlabError(f"no images under {root}")
    return files


# The offline fallback has six distinct photos: tiled to this many, (b) runs long enough (several
# shards' worth of batches) that its rate and b/c mean something; over six images they did not.
SAMPLE_IMAGES = 512


def bundled_images(directory: Path) -> list[Path]:
    """scikit-image's sample photos as JPEGs (offline fallback when no shared data is present)."""
    from PIL import Image
    from skimage import data

    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for name in ("chelsea", "coffee", "astronaut", "rocket", "cat", "immunohistochemistry"):
        arr = getattr(data, name)()
        if arr.ndim != 3:
            continue
        p = directory / f"{name}.jpg"
        Image.fromarray(arr[..., :3]).save(p, quality=92)
        out.append(p)
    return out


def tile(paths: Sequence[Path], n: int) -> list[Path]:
    """``n`` paths, repeating the set as often as needed (the scaling runs tile the shared set)."""
    reps = -(-n // len(paths))
    return (list(paths) * reps)[:n]


class _Peak:
    """Peak RSS of one phase: reset the kernel's high-water mark, read VmHWM afterwards."""

    def __enter__(self) -> _Peak:
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.reset = True
        except OSError:
            self.reset = False
        self.mb = 0.0
        return self

    def __exit__(self, *exc) -> None:
        self.mb = peak_rss_mb()


def peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def naive_loop(bb: Backbone, paths: Sequence[Path], batch_size: int,
               device: torch.device) -> tuple[int, float]:
    """The lesson's loop, on a private fp32 NCHW copy of the model (our runner changes the
    shared one to channels_last, which would flatter the baseline)."""
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms
    from torchvision.datasets.folder import default_loader  # what ImageFolder uses

    dc = bb.data_config
    tf = transforms.Compose([
        transforms.Resize(dc.resize_size, interpolation=dc.pil_interpolation),
        transforms.CenterCrop(dc.input_size),
        transforms.ToTensor(),  # [0, 1]; the backbone normalises inside (the lesson's Normalize)
    ])

    class Files(Dataset):  # ImageFolder's __getitem__ over our file list (same images as (b))
        def __len__(self) -> int:
            return len(paths)

        def __getitem__(self, i: int):
            try:
                return tf(default_loader(str(paths[i])))
            except OSError:  # the lesson's loop would crash on Cat/666.jpg; the usual patch skips
                return None

    def collate(items):
        items = [x for x in items if x is not None]
        return torch.stack(items) if items else None

    model = copy.deepcopy(bb.model).to(device, memory_format=torch.contiguous_format).eval()
    n = 0
    t0 = time.perf_counter()
    with torch.no_grad():
        for x in DataLoader(Files(), batch_size=batch_size, num_workers=0, collate_fn=collate):
            if x is not None:
                model.features(x.to(device)).cpu()
                n += len(x)
    return n, time.perf_counter() - t0


def predecoded_batches(sample: Sequence[Path], dc, n: int, batch_size: int, device: torch.device) -> list[torch.Tensor]:
    """``n`` images of ``sample`` decoded ahead of time into uint8 batches (distinct images where
    the sample has them: cycling through two batches would stay in the CPU cache and flatter (c))."""
    bs = batch_size
    arrs = []
    for p in sample:
        try:
            arrs.append(decode_array(p, dc))
        except (OSError, BadImage):
            continue
        if len(arrs) == n:
            break
    if not arrs:
        raise TransferlabError("no readable image in the bench data")
    arrs = tile(arrs, bs * max(1, -(-len(arrs) // bs)))  # type: ignore[arg-type]
    batches = [torch.from_numpy(np.stack(arrs[i:i + bs])).permute(0, 3, 1, 2)
               for i in range(0, len(arrs), bs)]
    if device.type == "cuda":
        batches = [b.pin_memory() for b in batches]
    return batches


def forward_limit(run: FeatureRunner, batches: list[torch.Tensor], n: int) -> tuple[int, float]:
    """Runner throughput on pre-decoded uint8 batches, ``n`` images."""
    done, k = 0, 0
    t0 = time.perf_counter()
    while done < n:
        batch = batches[k % len(batches)]
        run(batch)
        done += len(batch)
        k += 1
    if run.device.type == "cuda":
        torch.cuda.synchronize()
    return done, time.perf_counter() - t0


def interleaved(run: FeatureRunner, paths: Sequence[Path], dc, workers: int | None, limit_batches: list,
                progress: bool, chunk: int = 1024) -> tuple[dict, dict]:
    """(b) and (c) in alternation: ``chunk`` images through transferlab's extraction loop (cache
    shards written to a temp dir, like ``extract``), then a quarter as many through the runner on
    pre-decoded batches, and so on. On a shared VM the cores' speed drifts by 10-20 % within a
    minute; timing both phases side by side cancels that drift in b/c."""
    from ..features import FeatureCache
    from ..progress import resolve

    bn = failed = cn = 0
    bt = ct = 0.0
    c_rates: list[float] = []
    with tempfile.TemporaryDirectory(prefix="transferlab-bench-") as tmp:
        store = FeatureCache(Path(tmp))
        with resolve(progress)("pipeline", len(paths)) as adv:
            for start in range(0, len(paths), chunk):
                part = paths[start:start + chunk]
                pend: list[np.ndarray] = []
                keys: list[str] = []
                t0 = time.perf_counter()
                for batch, f in run_features(part, dc, run, workers):
                    failed += len(batch.failed)
                    if batch.indices:
                        pend.append(f)
                        keys.extend(str(start + i) for i in batch.indices)
                    adv(len(batch.indices) + len(batch.failed))
                if keys:
                    store.put(keys, np.concatenate(pend), {})
                bt += time.perf_counter() - t0
                bn += len(keys)
                m, dt = forward_limit(run, limit_batches, max(len(part) // 4, run.batch_size))
                cn, ct = cn + m, ct + dt
                c_rates.append(m / dt)
    pipeline = {"images": bn, "seconds": bt, "img_s": bn / bt, "failed": failed,
                "note": "decode threads + runner, shards to temp cache"}
    limit = {"images": cn, "seconds": ct, "img_s": cn / ct, "chunk_img_s": [round(r, 1) for r in c_rates],
             "note": f"pre-decoded batches, timed between (b)'s chunks ({min(c_rates):.0f}-{max(c_rates):.0f})"}
    return pipeline, limit


@dataclass
class BenchOptions:
    """What ``bench`` measures and how (the CLI's flags). ``compile`` None: what ``train`` does
    (``TRANSFERLAB_COMPILE``); ``engines`` False skips the engine table."""

    naive_limit: int = 256
    batch_size: int = 32
    workers: int | None = None
    threads: int | None = None
    compile: bool | None = None
    bf16: bool | None = None
    device: str | None = None
    naive: bool = True
    engine: str = "auto"
    engines: bool = True


def bench(backbone: str = DEFAULT_BACKBONE, data: str | Path | None = None, limit: int | None = None, *,
          progress=True, options: BenchOptions | None = None, **kw) -> dict:
    """Measure (a) naive, (b) pipeline, (c) forward-only limit on the same images, and every engine's
    forward-only rate side by side; return a dict with img/s, the ratios b/a and b/c, the engine
    table and verdict, peak RSS per phase and every setting used. ``data`` None: scikit-image's
    sample photos (tiled to ``limit`` or 512), so bench works anywhere. ``options`` or keywords
    of :class:`BenchOptions`.

    The engine table's winner among what ``auto`` races becomes this machine's verdict (the same
    cache ``train`` reads), and ``--engine auto`` runs (b) and (c) with it: (c) is then the best
    engine's forward-only rate."""
    o = replace(options, **kw) if options else BenchOptions(**kw)
    if o.engine not in ENGINES:
        raise TransferlabError(f"unknown engine '{o.engine}' (choose from {', '.join(ENGINES)})")
    if o.threads:
        torch.set_num_threads(o.threads)
    dev = torch.device(o.device) if o.device else default_device()
    if o.engine == "onnxruntime" and dev.type != "cpu":
        raise OptionError("engine", "onnxruntime runs on the CPU only; use {device} cpu")
    with tempfile.TemporaryDirectory(prefix="transferlab-bench-data-") as tmp:
        if data is None:
            files, source = bundled_images(Path(tmp)), "bundled scikit-image samples (tiled)"
        else:
            files, source = list_images(Path(data)), str(data)
        bb = create_backbone(backbone)
        dc = bb.data_config
        paths = tile(files, limit or (SAMPLE_IMAGES if data is None else len(files)))
        result: dict = {"backbone": backbone, "data": source, "distinct_images": len(files), "images": len(paths),
                        "input": f"{dc.input_size}px (resize {dc.resize_size}, {dc.interpolation})"}
        if o.naive:
            result["naive"] = _naive_phase(bb, paths[: o.naive_limit], o.batch_size, dev)
        run, setup = _measure(bb, paths, o, dev, progress, result)
    result["settings"] = run.settings | {
        "decode_workers": o.workers or default_workers(), "decode_nice": default_nice(),
        "compile_seconds": run.compile_seconds,  # one-off: torch.compile or the ONNX export
        "engine_default": engine_default(dev, bb, measure=False), "setup_seconds": round(setup, 2),
        "cpu_count": os.cpu_count(), "torch": torch.__version__,
    }
    b = result["pipeline"]["img_s"]
    result["ratios"] = {"b/c": b / result["limit"]["img_s"]}
    if o.naive:
        result["ratios"]["b/a"] = b / result["naive"]["img_s"]
    result["peak_rss_mb"] = max(result[k]["peak_rss_mb"] for k in ("naive", "limit", "pipeline") if k in result)
    return result


def _naive_phase(bb: Backbone, paths: list, batch_size: int, dev: torch.device) -> dict:
    with _Peak() as pk:
        m, dt = naive_loop(bb, paths, batch_size, dev)
    return {"images": m, "seconds": dt, "img_s": m / dt, "peak_rss_mb": pk.mb,
            "note": f"first {m} images; ImageFolder loader + DataLoader(num_workers=0) + eager fp32 NCHW"}


def engine_table(bb: Backbone, batches: list[torch.Tensor], dev: torch.device,
                 compiled: bool = False) -> tuple[dict, dict | None]:
    """Forward-only img/s of every engine here on the same pre-decoded batches (two alternating
    rounds; ``compiled`` adds torch.compile), and on a CPU the verdict it implies, stored for
    ``train`` & co (compiled torch is tabulated, not raced: see :mod:`transferlab.runtime.engine`)."""
    size = bb.data_config.input_size
    t0 = time.perf_counter()
    rates = measure_engines(bb.model, dev, size, table_candidates(dev, compiled), batches=batches, min_rounds=2,
                            max_rounds=2)
    if dev.type != "cpu":
        return rates, None
    v = record_verdict(backbone_arch(bb), dev, size, rates, source="bench", label=bb.name,
                       seconds=time.perf_counter() - t0)
    return rates, {"engine": v["engine"], "winner": v["winner"], "raced": sorted(v["rates"]),
                   "stored": str(verdict_file())}


def _measure(bb: Backbone, paths: list, o: BenchOptions, dev: torch.device, progress, result: dict):
    """Engine table, then (b) and (c) into ``result``; returns the runner and its setup seconds."""
    with _Peak() as pk_c:
        batches = predecoded_batches(paths, bb.data_config, 256, o.batch_size, dev)
        if o.engines:
            result["engines"], result["verdict"] = engine_table(bb, batches, dev, compiled=bool(o.compile))
        t0 = time.perf_counter()
        engine = engine_default(dev, bb, measure=True) if o.engine == "auto" else o.engine
        run = FeatureRunner(bb.model, dev, bf16=o.bf16, compile=o.compile, batch_size=o.batch_size, engine=engine)
        run(batches[0])  # warm-up (and compile or export)
        setup = time.perf_counter() - t0
    with _Peak() as pk:
        result["pipeline"], result["limit"] = interleaved(run, paths, bb.data_config, o.workers, batches, progress)
    result["pipeline"]["peak_rss_mb"] = pk.mb
    result["limit"]["peak_rss_mb"] = pk_c.mb
    del batches
    bb.model.to("cpu")
    return run, setup
