"""The CLI contract: exit 0 / 2 with one line and no traceback, --json output."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def tl(*args, timeout=300):
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "transferlab", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_classify_json(sample_images):
    r = tl("classify", sample_images["chelsea"], sample_images["coffee"], "--top-k", "3", "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res[0]["top"][0]["label"] in {"tabby", "tiger cat", "Egyptian cat"}
    assert res[1]["top"][0]["label"] == "espresso" and res[1]["top"][0]["score"] > 0.9


def test_backbones_json():
    r = tl("backbones", "--json")
    assert r.returncode == 0
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert all(rows[n]["available"] for n in ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2",
                                              "mobilenet_v2"))
    assert rows["efficientnet_lite2"]["input_size"] == 260
    assert rows["mobilenet_v2"]["params_m"] == pytest.approx(3.5, abs=0.1)


@pytest.mark.parametrize(
    "args,needle",
    [
        (("train", "/no/such/data"), "data not found"),
        (("train", "{pets}", "--backbone", "no_such_net"), "unknown backbone"),
        (("evaluate", "/no/such/run/", "{pets}"), "run directory not found"),
        (("predict", "{run}", "/no/such.jpg"), "image not found"),
        (("classify", "{bad}"), "no readable image"),
        (("classify", "{chelsea}", "--backbone", "resnet50"), "bundled backbone"),
        (("evaluate", "{run}", "{pets}", "--split", "sideways"), "--split"),
        (("train", "{pets}", "--input-size", "10"), "--input-size"),  # typer's own validation
        (("train", "{pets}", "--batch-size", "0"), "--batch-size"),
        (("train", "{pets}", "--no-such-option"), "no-such-option"),
        (("train",), "Missing argument"),
        (("train", "{pets}", "--mixup", "0.2"), "applies to --mode finetune"),  # linear would ignore it
        (("train", "{pets}", "--mode", "head", "--unfreeze", "all"), "applies to --mode finetune"),
    ],
)
def test_user_errors_exit_2_one_line(args, needle, small_pets, small_pets_run, sample_images, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    subs = {"{pets}": small_pets, "{run}": small_pets_run, "{bad}": bad, "{chelsea}": sample_images["chelsea"]}
    r = tl(*[subs.get(a, a) for a in args])
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.slow
def test_train_evaluate_predict_cli(tmp_path, small_pets, heldout_pets_csv):
    run = tmp_path / "run"
    r = tl("train", small_pets, "--out", run, "--json", "--quiet")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["run"] == str(run) and res["val_accuracy"] >= 0.9 and res["skipped"] == 0
    r = tl("evaluate", run, heldout_pets_csv, "--out", tmp_path / "ev", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["accuracy"] >= 0.9 and (tmp_path / "ev" / "top_losses.png").exists()
    dog = heldout_pets_csv.read_text().splitlines()[-1].split(",")[0]
    r = tl("predict", run, dog, "--json")
    assert r.returncode == 0 and json.loads(r.stdout)[0]["top"][0]["label"] == "Dog"


@pytest.mark.parametrize("command", ["featuremaps", "dream", "attack"])
def test_model_consumers_take_model_option(command, monkeypatch, capsys, tmp_path):
    """featuremaps / dream / attack take the model as --model/-m (NAME|RUN) like every consumer;
    the old --backbone / --run are hidden aliases, and giving the model twice is a user error."""
    from tests._helpers import run_cli

    code, out, _ = run_cli([command, "--help"], monkeypatch, capsys)
    assert code == 0 and "--model" in out and "MODEL" in out
    assert "--backbone" not in out and "--run " not in out
    first = {"featuremaps": ["x.jpg"], "dream": ["zebra"], "attack": ["x.jpg", "--untargeted"]}[command]
    args = [command, *first, "--out", tmp_path / "o.png", "-m", "mobilenet_v2", "--run", tmp_path]
    code, _, err = run_cli(args, monkeypatch, capsys)
    assert code == 2 and err.startswith("error: give the model once") and len(err.splitlines()) == 1
