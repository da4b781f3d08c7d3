"""The fast input pipeline gives the same pixels as the per-image reference preprocessing, decodes
large JPEGs cheaply (draft) without changing what the model sees, and reports bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from transferlab.data.geometry import DataConfig
from transferlab.data.images import load_rgb
from transferlab.data.loader import decode, iter_batches
from transferlab.features import extract
from transferlab.models.registry import create_backbone
from transferlab.runtime.runner import FeatureRunner

LITE = DataConfig.from_crop_pct(224, 0.875, interpolation="bicubic", mean=(0.5,) * 3, std=(0.5,) * 3)
BILINEAR = DataConfig(input_size=224, resize_size=256, interpolation="bilinear")


LANCZOS = DataConfig(input_size=224, resize_size=256, interpolation="lanczos")


def reference(path: Path, dc: DataConfig) -> torch.Tensor:
    """The slow, obviously-right path: PIL image -> torchvision resize + crop (on PIL) -> float."""
    from torchvision.transforms.v2 import functional as TF

    img = TF.resize(load_rgb(path, min_side=dc.resize_size), dc.resize_size, interpolation=dc.pil_interpolation)
    return TF.to_dtype(TF.pil_to_tensor(TF.center_crop(img, [dc.input_size] * 2)), torch.float32, scale=True)


@pytest.fixture(scope="module")
def mixed_files(sample_images, tmp_path_factory) -> list[Path]:
    """Landscape, portrait, square, grayscale, RGBA PNG, a tiny image that must be upscaled, and
    a panorama (resized it would dwarf the crop: the PIL box path)."""
    d = tmp_path_factory.mktemp("mixed")
    chelsea = Image.open(sample_images["chelsea"])
    files = [sample_images["chelsea"], sample_images["coffee"], sample_images["astronaut"]]
    chelsea.transpose(Image.Transpose.ROTATE_90).save(d / "portrait.jpg", quality=90)
    chelsea.convert("L").save(d / "gray.jpg")
    rgba = chelsea.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(d / "alpha.png")
    chelsea.resize((97, 61)).save(d / "tiny.png")
    chelsea.resize((1500, 120)).save(d / "panorama.png")
    return [*files, d / "portrait.jpg", d / "gray.jpg", d / "alpha.png", d / "tiny.png", d / "panorama.png"]


@pytest.mark.parametrize("dc", [LITE, BILINEAR, LANCZOS], ids=["bicubic", "bilinear", "lanczos"])
def test_batches_equal_reference_preprocessing(mixed_files, dc):
    batches = list(iter_batches(mixed_files, dc, batch_size=3, workers=2))
    assert [i for b in batches for i in b.indices] == list(range(len(mixed_files)))
    got = torch.cat([b.pixels for b in batches])
    ref = torch.stack([reference(p, dc) for p in mixed_files])
    assert got.shape == (len(mixed_files), 3, 224, 224)
    # torch's uint8 antialiased kernel (bilinear, bicubic) and the one-step PIL box resample
    # (lanczos, panorama) reproduce PIL's resize-then-crop up to 8-bit rounding of a few pixels
    diff = (got - ref).abs()
    assert diff.max().item() <= 2.01 / 255
    assert diff.mean().item() < 0.2 / 255
    for f in mixed_files:
        assert torch.allclose(decode(f, dc), reference(f, dc), atol=2.01 / 255)


def test_batches_are_uint8_channels_last(mixed_files):
    b = next(iter(iter_batches(mixed_files[:2], LITE, batch_size=2)))
    assert b.data.dtype == torch.uint8
    assert b.data.is_contiguous(memory_format=torch.channels_last)
    px = b.pixels
    assert px.dtype == torch.float32 and px.min() >= 0.0 and px.max() <= 1.0


def test_petimages_match_reference(petimages):
    files = sorted((petimages / "Cat").glob("*.jpg"))[:6] + sorted((petimages / "Dog").glob("*.jpg"))[:6]
    got = torch.cat([b.pixels for b in iter_batches(files, LITE, batch_size=5)])
    ref = torch.stack([reference(p, LITE) for p in files])
    assert (got - ref).abs().max().item() <= 2.01 / 255


def test_image_at_input_size_passes_through_untouched(tmp_path):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)  # e.g. a saved adversarial PNG
    Image.fromarray(arr).save(tmp_path / "adv.png")
    b = next(iter(iter_batches([tmp_path / "adv.png"], LITE, batch_size=1)))
    assert torch.equal(b.data[0].permute(1, 2, 0), torch.from_numpy(arr))


def test_draft_decoding_of_large_jpeg_matches_full_decode(sample_images, tmp_path):
    big = tmp_path / "big.jpg"
    Image.open(sample_images["chelsea"]).resize((2000, 1500), Image.Resampling.BICUBIC).save(big, quality=92)
    # draft really decodes at reduced scale (1/4 here: 500x375 keeps the short side >= 256)...
    assert load_rgb(big, min_side=LITE.resize_size).size == (500, 375)
    # ...and the model input is nearly the same as from the full-size decode
    fast = decode(big, LITE)
    full = LITE.preprocess(load_rgb(big))
    assert (fast - full).abs().mean().item() < 0.01
    assert torch.nn.functional.cosine_similarity(fast.flatten(), full.flatten(), dim=0) > 0.999
    # (the speed-up itself is measured in benchmarks/, not asserted on a shared CPU)


def test_bad_files_are_reported_not_fatal(sample_images, tmp_path):
    trunc = tmp_path / "truncated.jpg"
    trunc.write_bytes(sample_images["coffee"].read_bytes()[:300])
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    files = [sample_images["chelsea"], trunc, text, tmp_path / "missing.jpg", empty, sample_images["coffee"]]
    batches = list(iter_batches(files, LITE, batch_size=4, workers=2))
    ok = [i for b in batches for i in b.indices]
    failed = dict(f for b in batches for f in b.failed)
    assert ok == [0, 5]
    assert sorted(failed) == [1, 2, 3, 4]
    assert failed[3] == "file not found"
    assert all(isinstance(r, str) and r for r in failed.values())
    got = torch.cat([b.pixels for b in batches])
    assert torch.allclose(got[1], reference(files[5], LITE), atol=2.01 / 255)  # rows compacted in order


@pytest.fixture(scope="module")
def lite0():
    return create_backbone("efficientnet_lite0")


def test_runner_matches_eager_model(lite0, mixed_files):
    b = next(iter(iter_batches(mixed_files[:4], lite0.data_config, batch_size=4)))
    with torch.no_grad():
        ref = lite0.model.features(b.pixels.contiguous())
    fp32 = FeatureRunner(lite0.model, "cpu", bf16=False, batch_size=4, engine="torch")(b.data)
    assert fp32.dtype == torch.float32 and fp32.shape == ref.shape
    assert torch.allclose(fp32, ref, atol=1e-3, rtol=1e-3)
    bf16 = FeatureRunner(lite0.model, "cpu", bf16=True, batch_size=4, engine="torch")(b.data)
    cos = torch.nn.functional.cosine_similarity(bf16, ref, dim=1)
    assert cos.min() > 0.98


def test_failed_compile_falls_back_to_eager(lite0, mixed_files, monkeypatch):
    """A machine without a working inductor toolchain still extracts (eager), with a warning."""

    def broken_compile(fn, **kw):
        def compiled(*a):
            raise RuntimeError("InductorError: no C++ compiler found\nlong traceback")
        return compiled

    monkeypatch.setattr(torch, "compile", broken_compile)
    b = next(iter(iter_batches(mixed_files[:4], lite0.data_config, batch_size=4)))
    run = FeatureRunner(lite0.model, "cpu", bf16=False, compile=True, batch_size=4, engine="torch")
    with pytest.warns(UserWarning, match="no C\\+\\+ compiler found"):
        got = run(b.data)
    assert run.compile is False and run.settings["compile"] is False
    ref = FeatureRunner(lite0.model, "cpu", bf16=False, compile=False, batch_size=4, engine="torch")(b.data)
    assert torch.allclose(got, ref, atol=1e-5)


def test_onnxruntime_engine_matches_torch_and_follows_weight_changes(lite0, mixed_files):
    """The ONNX export gives torch's fp32 features (short batches padded to the graph's fixed
    shape), and exports again when the model's weights change instead of using stale ones."""
    import copy

    model = copy.deepcopy(lite0.model)
    batches = list(iter_batches(mixed_files[:7], lite0.data_config, batch_size=4))
    assert len(batches[-1].indices) < 4  # the last batch is short
    onnx = FeatureRunner(model, "cpu", batch_size=4, engine="onnxruntime")
    torch_run = FeatureRunner(model, "cpu", bf16=False, batch_size=4, engine="torch")
    for b in batches:
        got, ref = onnx(b.data), torch_run(b.data)
        assert got.shape == (len(b.indices), lite0.feature_dim)
        assert torch.allclose(got, ref, atol=1e-4, rtol=1e-4)
    assert onnx.settings["engine"] == "onnxruntime" and onnx.settings["bf16"] is False
    assert onnx.compile_seconds and onnx.compile_seconds > 0

    before = onnx(batches[0].data)
    with torch.no_grad():
        model.trunk.conv_head.weight.mul_(0.5)  # an in-place update, like an optimizer step
    after, ref = onnx(batches[0].data), torch_run(batches[0].data)
    assert not torch.allclose(after, before, atol=1e-2)
    assert torch.allclose(after, ref, atol=1e-4, rtol=1e-4)
    assert not model.training  # the export did not flip the model into train mode


def test_failed_onnx_export_falls_back_to_torch(lite0, mixed_files, monkeypatch):
    def broken_export(*a, **kw):
        raise RuntimeError("Unsupported operator aten::weird\nlong traceback")

    monkeypatch.setattr(torch.onnx, "export", broken_export)
    b = next(iter(iter_batches(mixed_files[:4], lite0.data_config, batch_size=4)))
    run = FeatureRunner(lite0.model, "cpu", bf16=False, batch_size=4, engine="onnxruntime")
    with pytest.warns(UserWarning, match="ONNX export failed.*aten::weird"):
        got = run(b.data)
    assert run.settings["engine"] == "torch"
    ref = FeatureRunner(lite0.model, "cpu", bf16=False, batch_size=4, engine="torch")(b.data)
    assert torch.allclose(got, ref, atol=1e-5)


def test_engine_override_follows_env(lite0, monkeypatch, tmp_path):
    """TRANSFERLAB_ENGINE=torch|onnxruntime is used as given (nothing is timed); CUDA is torch."""
    from transferlab.errors import TransferlabError
    from transferlab.runtime import engine

    monkeypatch.setenv("TRANSFERLAB_CACHE", str(tmp_path))
    monkeypatch.setattr(engine, "measure_engines", _no_measuring)
    cpu = torch.device("cpu")
    for forced in ("torch", "onnxruntime"):
        monkeypatch.setenv("TRANSFERLAB_ENGINE", forced)
        assert engine.engine_default(cpu, lite0) == forced
    assert engine.engine_default(torch.device("cuda"), lite0) == "torch"
    monkeypatch.setenv("TRANSFERLAB_ENGINE", "tensorrt")
    with pytest.raises(TransferlabError, match="TRANSFERLAB_ENGINE='tensorrt'"):
        engine.engine_default(cpu, lite0)
    assert not (tmp_path / "engines.json").exists()


def _no_measuring(*a, **kw):
    raise AssertionError("measured although a verdict or an override should have decided")


@pytest.fixture
def counted_measure(monkeypatch, tmp_path):
    """A private verdict cache, ``auto``, and the real measurement on tiny batches, counted."""
    from transferlab.runtime import engine

    monkeypatch.setenv("TRANSFERLAB_CACHE", str(tmp_path))
    monkeypatch.setenv("TRANSFERLAB_ENGINE", "auto")
    monkeypatch.setattr(engine, "probe_batch", lambda size: 2)
    calls = []
    real = engine.measure_engines

    def counting(model, device, size, candidates, **kw):
        calls.append(size)
        return real(model, device, size, candidates, min_rounds=1, max_rounds=1, **kw)

    monkeypatch.setattr(engine, "measure_engines", counting)
    return calls


def test_auto_engine_is_measured_once_then_read_from_the_cache(lite0, counted_measure, monkeypatch, tmp_path):
    import json

    from transferlab.runtime import engine

    cpu = torch.device("cpu")
    assert engine.engine_default(cpu, lite0, measure=False) == "torch"  # small job, no verdict: no timing
    assert counted_measure == []
    first = engine.engine_default(cpu, lite0)
    assert counted_measure == [224]
    stored = json.loads((tmp_path / "engines.json").read_text())
    (key, v), = stored["verdicts"].items()
    rates = {k: r["img_s"] for k, r in v["rates"].items()}
    assert set(rates) == set(engine.auto_candidates(cpu)) and min(rates.values()) > 0
    assert v["engine"] == first == engine.auto_candidates(cpu)[max(rates, key=rates.get)]["engine"]
    assert v["input_size"] == 224 and v["cpu"]["cores"] and v["versions"]["torch"] == torch.__version__

    # The verdict is reused, not re-measured: make it say the other engine and it is obeyed.
    other = "torch" if first == "onnxruntime" else "onnxruntime"
    stored["verdicts"][key]["engine"] = other
    (tmp_path / "engines.json").write_text(json.dumps(stored))
    monkeypatch.setattr(engine, "measure_engines", _no_measuring)
    assert engine.engine_default(cpu, lite0) == other
    assert engine.engine_default(cpu, lite0, measure=False) == other
    monkeypatch.setenv("TRANSFERLAB_ENGINE", first)  # a forced engine beats the verdict
    assert engine.engine_default(cpu, lite0) == first


def test_verdict_is_per_input_size_not_per_weights(lite0, counted_measure, tmp_path):
    import copy
    import json

    from transferlab.runtime import engine

    cpu = torch.device("cpu")
    engine.engine_default(cpu, lite0)
    tuned = copy.deepcopy(lite0.model)  # a fine-tuned copy: other weights, same speed
    with torch.no_grad():
        tuned.trunk.conv_head.weight.mul_(0.5)
    engine.choose_engine(tuned, cpu, 224)
    assert counted_measure == [224]
    engine.engine_default(cpu, create_backbone("efficientnet_lite0", input_size=160))
    assert counted_measure == [224, 160]  # another input size: timed on its own
    sizes = sorted(v["input_size"] for v in json.loads((tmp_path / "engines.json").read_text())["verdicts"].values())
    assert sizes == [160, 224]


def test_damaged_verdict_file_is_measured_again(lite0, counted_measure, tmp_path):
    from transferlab.runtime import engine

    (tmp_path / "engines.json").write_text("{not json")
    assert engine.engine_default(torch.device("cpu"), lite0) in ("torch", "onnxruntime")
    assert counted_measure == [224]
    assert engine.engine_default(torch.device("cpu"), lite0, measure=False) in ("torch", "onnxruntime")
    assert counted_measure == [224]  # rewritten: read back, not measured again


def test_engines_agree_on_real_photos_in_fp32_and_bf16(lite0, petimages):
    """What either engine extracts trains the same head: onnxruntime equals torch fp32 closely
    and torch bf16 within bf16's rounding, and all three give the ImageNet head the same top-1."""
    files = sorted((petimages / "Cat").glob("*.jpg"))[:4] + sorted((petimages / "Dog").glob("*.jpg"))[:4]
    b = next(iter(iter_batches(files, lite0.data_config, batch_size=8)))
    assert len(b.indices) >= 6
    model = lite0.model
    ort = FeatureRunner(model, "cpu", batch_size=8, engine="onnxruntime")(b.data)
    fp32 = FeatureRunner(model, "cpu", bf16=False, batch_size=8, engine="torch")(b.data)
    bf16 = FeatureRunner(model, "cpu", bf16=True, batch_size=8, engine="torch")(b.data)
    assert torch.allclose(ort, fp32, atol=1e-4, rtol=1e-4)
    for a, ref in ((ort, bf16), (fp32, bf16)):
        assert torch.nn.functional.cosine_similarity(a, ref, dim=1).min() > 0.98
    with torch.no_grad():
        top = [model.head(f).argmax(1) for f in (ort, fp32, bf16)]
    assert torch.equal(top[0], top[1]) and (top[0] == top[2]).float().mean() >= 0.75


def test_onnx_export_is_the_fast_exporter_and_matches_dynamo(lite0, mixed_files):
    """The TorchScript exporter's graph gives the dynamo exporter's features to 1e-5 (issue 16:
    0.5 s instead of ~6 s per export)."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    import onnxruntime as ort

    from transferlab.runtime.onnx import _NHWCFeatures, export_onnx

    b = next(iter(iter_batches(mixed_files[:4], lite0.data_config, batch_size=4)))
    x = np.ascontiguousarray(b.data.permute(0, 2, 3, 1).numpy())
    graph = _NHWCFeatures(lite0.model).eval()
    fast = export_onnx(graph, torch.zeros(x.shape, dtype=torch.uint8))
    assert onnx.load_from_string(fast).opset_import[0].version == 17  # not the dynamo exporter's
    with torch.inference_mode(False), torch.no_grad():
        dyn = torch.onnx.export(graph, (torch.zeros(x.shape, dtype=torch.uint8),), dynamo=True,
                                input_names=["x"], output_names=["f"]).model_proto.SerializeToString()
    run = [ort.InferenceSession(p, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0] for p in (fast, dyn)]
    np.testing.assert_allclose(run[0], run[1], atol=1e-5, rtol=0)
    with torch.no_grad():
        ref = lite0.model.features(b.pixels.contiguous()).numpy()
    np.testing.assert_allclose(run[0], ref, atol=1e-4, rtol=1e-4)


def test_extract_streams_to_cache_and_skips_bad(lite0, sample_images, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_text("nope")
    files = [sample_images["chelsea"], bad, sample_images["coffee"]]
    first = extract(lite0, files, batch_size=2, progress=False)
    assert first.ok.tolist() == [True, False, True]
    assert first.skipped[0][0] == str(bad)
    assert first.features.shape == (2, lite0.feature_dim) and first.extracted == 3
    again = extract(lite0, files, batch_size=2, progress=False)
    assert again.extracted == 0
    np.testing.assert_array_equal(again.features, first.features)


def test_frozen_prefix_of_a_finetune_follows_the_verdict(lite0, monkeypatch, tmp_path):
    """Fine-tuning on a CPU runs the frozen groups in onnxruntime exactly when the verdict for that
    network at that input size says onnxruntime is faster (no CPU-flag guess, no re-timing)."""
    from transferlab.models.groups import depth_groups
    from transferlab.runtime import engine
    from transferlab.runtime.verdict import arch_key
    from transferlab.training.frozen import frozen_prefix

    monkeypatch.setenv("TRANSFERLAB_CACHE", str(tmp_path))
    monkeypatch.setenv("TRANSFERLAB_ENGINE", "auto")
    monkeypatch.setattr(engine, "measure_engines", _no_measuring)
    cpu, model = torch.device("cpu"), lite0.model
    groups = depth_groups(model.trunk)
    labels = list(engine.auto_candidates(cpu))  # [torch ..., onnxruntime fp32]
    for fast, want in ((labels[1], True), (labels[0], False)):
        rates = {k: {"img_s": 100.0 if k == fast else 10.0} for k in labels}
        engine.record_verdict(arch_key(model), cpu, 128, rates, source="test")
        prefix = frozen_prefix(model, groups, 2, 2, 128, cpu)
        assert (prefix is not None) == want
    x = torch.rand(2, 3, 128, 128)
    engine.record_verdict(arch_key(model), cpu, 128, {labels[1]: {"img_s": 1.0}}, source="test")
    prefix = frozen_prefix(model, groups, 2, 2, 128, cpu)
    with torch.no_grad():
        assert torch.allclose(prefix(x), model(x), atol=1e-4)  # the onnxruntime prefix + torch rest = the network
