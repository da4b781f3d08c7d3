"""`transferlab bench` measures the three loops on the same small set and reports everything."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from typer.testing import CliRunner

from transferlab import cli
from transferlab.apps.bench import bench, tile


def test_tile_repeats_the_set():
    assert tile(["a", "b", "c"], 7) == ["a", "b", "c", "a", "b", "c", "a"]
    assert tile(["a", "b"], 1) == ["a"]


@pytest.fixture(scope="module")
def small_dir(sample_images, tmp_path_factory):
    d = tmp_path_factory.mktemp("benchdata")
    for name, p in sample_images.items():
        (d / f"{name}.jpg").write_bytes(p.read_bytes())
    (d / "broken.jpg").write_text("not a jpeg")
    return d


def test_bench_json_reports_three_rates(small_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("TRANSFERLAB_CACHE", str(tmp_path))
    args = ["bench", "--data", str(small_dir), "--limit", "8", "--naive-limit", "4", "--batch-size", "4",
            "--no-compile", "--json"]
    res = CliRunner().invoke(cli.app, args)
    assert res.exit_code == 0, res.output
    r = json.loads(res.stdout)
    for k in ("naive", "pipeline", "limit"):
        assert r[k]["img_s"] > 0 and r[k]["peak_rss_mb"] > 0
    assert r["naive"]["images"] == 3  # first 4 files, one of them broken: skipped, not fatal
    assert r["pipeline"]["images"] + r["pipeline"]["failed"] == 8 and r["pipeline"]["failed"] == 2
    assert r["ratios"]["b/a"] == pytest.approx(r["pipeline"]["img_s"] / r["naive"]["img_s"])
    assert r["ratios"]["b/c"] == pytest.approx(r["pipeline"]["img_s"] / r["limit"]["img_s"])
    lim = r["limit"]  # timed between (b)'s chunks and pooled: the pooled rate lies within the chunks'
    assert min(lim["chunk_img_s"]) - 0.1 <= lim["img_s"] <= max(lim["chunk_img_s"]) + 0.1
    s = r["settings"]
    need = {"device", "engine", "bf16", "channels_last", "compile", "batch_size", "torch_threads", "decode_workers"}
    assert need <= set(s)
    assert s["compile"] is False and s["batch_size"] == 4
    assert "torch fp32" in r["engines"] and r["verdict"]["engine"] == s["engine"]  # auto ran the winner


def test_bench_engines_report_what_ran(small_dir, monkeypatch, tmp_path):
    """--engine onnxruntime runs fp32 ONNX (compile/bf16 do not apply, the export is the one-off
    cost); --engine torch says whether it matches what train/evaluate use here."""
    from transferlab.report.text import bench_report as format_report

    monkeypatch.setenv("TRANSFERLAB_CACHE", str(tmp_path))
    onnx = bench(data=small_dir, limit=8, batch_size=4, naive=False, progress=False, engine="onnxruntime",
                 engines=False)
    s = onnx["settings"]
    assert s["engine"] == "onnxruntime" and s["bf16"] is False and s["compile"] is False
    assert s["compile_seconds"] > 0 and "fp32 ONNX (one-off export" in format_report(onnx)
    assert "engines" not in onnx and not (tmp_path / "engines.json").exists()  # no table: nothing timed
    tch = bench(data=small_dir, limit=8, batch_size=4, naive=False, progress=False, engine="torch", compile=False,
                engines=False)
    assert tch["settings"]["engine"] == "torch"
    text = format_report(tch)
    assert ("bench --engine onnxruntime measures that" in text) == (tch["settings"]["engine_default"] != "torch")


def test_bench_engine_table_sets_the_verdict_train_uses(small_dir, monkeypatch, tmp_path):
    """One run times every engine side by side; the fastest of what auto races becomes the cached
    verdict, runs (b) and (c), and is what extraction picks afterwards without timing again."""
    from transferlab.models.registry import create_backbone
    from transferlab.runtime import engine
    from transferlab.runtime.device import cpu_has_bf16

    monkeypatch.setenv("TRANSFERLAB_CACHE", str(tmp_path))
    monkeypatch.setenv("TRANSFERLAB_ENGINE", "auto")
    r = bench(data=small_dir, limit=8, batch_size=4, naive=False, progress=False, device="cpu")
    table = r["engines"]
    want = {"torch fp32", "onnxruntime fp32"} | ({"torch bf16"} if cpu_has_bf16() else set())
    assert want <= set(table) and all(t["img_s"] > 0 and len(t["rounds"]) == 2 for t in table.values())
    v = r["verdict"]
    raced = {k: table[k]["img_s"] for k in v["raced"]}
    assert v["winner"] == max(raced, key=raced.get) and (tmp_path / "engines.json").is_file()
    assert r["settings"]["engine"] == v["engine"] == r["settings"]["engine_default"]
    monkeypatch.setattr(engine, "measure_engines", lambda *a, **kw: pytest.fail("verdict not reused"))
    assert engine.engine_default(torch.device("cpu"), create_backbone("efficientnet_lite0")) == v["engine"]


def test_bench_text_report_without_naive(small_dir):
    from transferlab.report.text import bench_report as format_report

    r = bench(data=small_dir, limit=4, batch_size=4, compile=False, naive=False, progress=False, engines=False)
    text = format_report(r)
    assert "(b) pipeline" in text and "(c) limit" in text and "(a) naive" not in text
    assert "b/c" in text and "peak RSS" in text


def test_bench_missing_data_is_a_user_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["transferlab", "bench", "--data", str(tmp_path / "nope")])
    with pytest.raises(SystemExit) as e:
        cli.main()
    assert e.value.code == 2
    assert "not found" in capsys.readouterr().err


@pytest.mark.parametrize("args, msg", [(["--engine", "tensorrt"], "'tensorrt' is not one of"),
                                       (["--engine", "onnxruntime", "--device", "cuda"], "CPU only")])
def test_bench_bad_engine_is_a_user_error(args, msg, small_dir, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["transferlab", "bench", "--data", str(small_dir), *args])
    with pytest.raises(SystemExit) as e:
        cli.main()
    assert e.value.code == 2
    assert msg in capsys.readouterr().err


def test_compiled_torch_is_tabulated_on_request_and_never_raced():
    """``bench --compile`` adds compiled torch to the table (at the precision torch uses here);
    auto's race stays eager torch against onnxruntime (a compile costs about a minute)."""
    from transferlab.runtime import engine
    from transferlab.runtime.device import cpu_has_bf16

    cpu = torch.device("cpu")
    plain, more = engine.table_candidates(cpu), engine.table_candidates(cpu, compiled=True)
    label = f"torch {'bf16' if cpu_has_bf16() else 'fp32'} compiled"
    assert set(more) - set(plain) == {label} and more[label] == {"engine": "torch", "bf16": cpu_has_bf16(),
                                                                  "compile": True}
    assert not any(kw.get("compile") for kw in engine.auto_candidates(cpu).values())
