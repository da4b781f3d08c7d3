"""Fine-tuning on a few real cat/dog photos: it learns, it resumes exactly, and it runs under DDP.

Kept small for 2 shared cores: 24 PetImages photos (16 train / 8 val), 2 epochs, no head warm-up
(so the end-to-end epochs have something to learn)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from transferlab.data.datasets import ImageDataset, load_dataset
from transferlab.errors import RunError, TransferlabError
from transferlab.features import extract
from transferlab.models.groups import depth_groups
from transferlab.models.registry import create_backbone
from transferlab.run import load_run
from transferlab.training.api import train
from transferlab.training.augment import train_transform
from transferlab.training.frozen import frozen_prefix
from transferlab.training.learner import Callback
from transferlab.training.options import parse_unfreeze

REPO = Path(__file__).resolve().parents[1]
PETS_CAT = Path(__file__).resolve().parents[2] / "shared" / "data" / "petimages" / "Cat" / "1.jpg"
FT = {"mode": "finetune", "epochs": 2, "batch_size": 8, "head_epochs": 0, "lr": 1e-2, "val_fraction": 1 / 3,
      "progress": False}


class KillAfter(Callback):
    """Simulates a kill right after epoch ``epoch``'s checkpoint is on disk."""

    order = 50  # after Checkpoint's save

    def __init__(self, epoch: int):
        self.epoch = epoch

    def after_epoch(self, learn) -> None:
        if learn.epoch == self.epoch:
            raise SystemExit(f"simulated kill after epoch {self.epoch}")


def _pets(root: Path, per_class: int) -> ImageDataset:
    ds = load_dataset(root)
    idx = np.r_[[np.flatnonzero(ds.labels == c)[:per_class] for c in range(2)]].ravel()
    return ds.subset(idx)


@pytest.fixture(scope="module")
def uninterrupted(petimages, tmp_path_factory):
    out = tmp_path_factory.mktemp("ft") / "full"
    run = train(_pets(petimages, 12), out=out, **FT)
    return run


def test_depth_groups_and_unfreeze_spec():
    bb = create_backbone("efficientnet_lite0")
    groups = depth_groups(bb.model.trunk)
    assert groups[0] == ["conv_stem", "bn1"] and groups[-1][0] == "conv_head"
    assert [g[0] for g in groups[1:-1]] == [f"blocks.{i}" for i in range(7)]
    assert parse_unfreeze("last:2", len(groups)) == (2, False)
    assert parse_unfreeze("all", len(groups)) == (len(groups), False)
    with pytest.raises(TransferlabError):
        parse_unfreeze("last:0", len(groups))


def test_train_transform_follows_backbone_preprocessing(sample_images):
    from transferlab.data.images import load_rgb

    dc = create_backbone("efficientnet_lite0").data_config
    img = load_rgb(sample_images["chelsea"])
    for aug in ("light", "randaug", "none"):
        x = train_transform(dc, aug)(img)
        assert x.dtype == torch.uint8 and x.shape == (3, dc.input_size, dc.input_size)  # no Normalize
    # "none" is the eval geometry (one-resample PIL path vs torchvision's): same picture
    assert (train_transform(dc, "none")(img).float() - dc.preprocess(img) * 255).abs().mean() < 2


@pytest.mark.slow
def test_finetune_learns(uninterrupted):
    m = json.loads((uninterrupted.path / "metrics.json").read_text())
    h = m["history"]
    assert [r["epoch"] for r in h] == [0, 1, 2]
    assert h[2]["val_loss"] < h[0]["val_loss"] - 0.1  # from an untrained head to a trained network
    assert m["val_accuracy"] >= 0.75 and m["val_accuracy"] > h[0]["val_acc"]  # 8 val photos, chance 0.5
    assert (uninterrupted.path / "curves.png").stat().st_size > 0
    sd = load_file(str(uninterrupted.path / "model.safetensors"))
    assert any(k.startswith("trunk.") for k in sd)  # the whole network, loadable as a run
    base = create_backbone("efficientnet_lite0").model.trunk.state_dict()
    assert not torch.equal(sd["trunk.blocks.6.0.conv_pw.weight"], base["blocks.6.0.conv_pw.weight"])
    assert torch.equal(sd["trunk.bn2.running_mean"], base["bn2.running_mean"])  # BN statistics frozen
    run = load_run(uninterrupted.path)
    assert run.is_finetuned
    probs = run.predict_proba([str(PETS_CAT)], batch_size=4)
    assert probs.shape == (1, 2) and run.classes[int(probs.argmax())] == "Cat"


@pytest.mark.slow
def test_finetuned_run_never_uses_the_pretrained_feature_cache(uninterrupted, petimages):
    """The feature cache is keyed by the pretrained backbone: a fine-tuned run must neither read
    it (its head would see the wrong features) nor write its own features into it."""
    paths = _pets(petimages, 12).paths[:6]
    bb = create_backbone("efficientnet_lite0")
    pre = extract(bb, paths, progress=False)  # pretrained features, now cached
    run = load_run(uninterrupted.path)
    assert run.is_finetuned and not run.pretrained_trunk
    ft = extract(run.backbone, paths, model=run.model, progress=False)
    assert ft.extracted == 6 and not np.allclose(ft.features, pre.features, atol=1e-3)
    by_files, _ = run.predict_proba_paths(paths, cache=True)  # evaluate's path
    by_pixels = run.predict_proba(paths)
    assert list(by_files.argmax(1)) == list(by_pixels.argmax(1)) and np.abs(by_files - by_pixels).max() < 0.05
    again = extract(bb, paths, progress=False)
    assert again.extracted == 0 and np.array_equal(again.features, pre.features)  # the cache is untouched


@pytest.mark.slow
def test_resume_after_kill_replays_the_same_epochs(petimages, uninterrupted, tmp_path, monkeypatch):
    out = tmp_path / "killed"

    with pytest.raises(SystemExit):
        train(_pets(petimages, 12), out=out, callbacks=[KillAfter(1)], **FT)
    from transferlab.training.output import resume_source

    left = resume_source(out)  # the run appears only when complete: the checkpoint is in its hidden staging dir
    state = json.loads((left / "checkpoint" / "state.json").read_text())
    assert state["epoch"] == 1 and not out.exists() and left.name.startswith(".killed.")
    run = train(_pets(petimages, 12), out=out, resume=out, **FT)
    assert sorted(p.name for p in out.parent.iterdir()) == ["killed"]  # the staging dir became the run
    a = json.loads((uninterrupted.path / "metrics.json").read_text())
    b = json.loads((run.path / "metrics.json").read_text())
    losses = [r["val_loss"] for r in a["history"]]
    assert [r["val_loss"] for r in b["history"]] == pytest.approx(losses, abs=1e-5)
    assert b["val_accuracy"] == a["val_accuracy"]
    wa = load_file(str(uninterrupted.path / "model.safetensors"))
    wb = load_file(str(run.path / "model.safetensors"))
    assert all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa)
    assert json.loads((run.path / "config.json").read_text())["train"]["resumed_from_epoch"] == 1


def test_resume_without_checkpoint_is_a_user_error(petimages, tmp_path):
    with pytest.raises(RunError):
        train(_pets(petimages, 4), out=tmp_path / "r", resume=tmp_path / "nothing", **FT)


def test_head_mode_mlp_on_cached_features(petimages, tmp_path):
    run = train(_pets(petimages, 12), mode="head", out=tmp_path / "head", val_fraction=1 / 3, progress=False)
    assert run.config["head"]["type"] == "mlp"
    m = json.loads((run.path / "metrics.json").read_text())
    assert m["val_accuracy"] >= 0.85 and m["history"][-1]["epoch"] >= 1


@pytest.mark.slow
def test_ddp_two_processes_gloo(petimages, uninterrupted, tmp_path):
    """torchrun --nproc_per_node 2 (via --nproc): one run dir, the same metrics format as 1 process."""
    csv = tmp_path / "pets.csv"
    ds = _pets(petimages, 6)
    rows = "".join(f"{p},{ds.classes[y]}\n" for p, y in zip(ds.paths, ds.labels, strict=True))
    csv.write_text("path,label\n" + rows)
    out = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    cmd = [sys.executable, "-m", "transferlab", "train", str(csv), "--mode", "finetune", "--epochs", "1",
           "--batch-size", "4", "--val-fraction", "0.34", "--nproc", "2", "--out", str(out), "--quiet",
           "--json"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    try:
        printed = json.loads(r.stdout)  # rank 0 alone printed (one JSON document)
    except ValueError:
        pytest.fail(f"stdout is not one JSON document:\n{r.stdout[-2000:]}\nstderr:\n{r.stderr[-2000:]}")
    assert printed["run"] == str(out)
    m = json.loads((out / "metrics.json").read_text())
    one = json.loads((uninterrupted.path / "metrics.json").read_text())
    assert sorted(m) == sorted(one) and sorted(m["val"]) == sorted(one["val"])
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["train"]["world_size"] == 2
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == sorted(
        ["checkpoint", "config.json", "metrics.json", "model.safetensors", "confusion.png", "curves.png",
         "reliability.png"])


def test_tta_flip_and_crops(uninterrupted, petimages):
    paths = [str(petimages / "Cat" / "1.jpg"), str(petimages / "Dog" / "1.jpg")]
    plain = uninterrupted.predict_proba(paths, batch_size=4)
    for mode in ("flip", "flip+crops"):
        probs = uninterrupted.predict_proba(paths, batch_size=4, tta=mode)
        assert probs.shape == (2, 2)
        assert np.allclose(probs.sum(1), 1, atol=1e-4)
        assert (probs.argmax(1) == plain.argmax(1)).all()
    with pytest.raises(TransferlabError):
        uninterrupted.predict_proba(paths, tta="rotate")


@pytest.mark.slow
def test_mixup_cutmix_are_seeded_and_change_training(petimages, tmp_path):
    """timm's Mixup/CutMix draw from numpy's global generator: the trainer seeds it per epoch (so a
    run is reproducible and resumable) and gives the caller's generator state back untouched."""
    opts = {**FT, "epochs": 1, "mixup": 0.4, "cutmix": 1.0}
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    a = json.loads((train(_pets(petimages, 8), out=tmp_path / "a", **opts).path / "metrics.json").read_text())
    assert np.array_equal(np.random.get_state()[1], before)
    b = json.loads((train(_pets(petimages, 8), out=tmp_path / "b", **opts).path / "metrics.json").read_text())
    plain = {**opts, "mixup": 0.0, "cutmix": 0.0}
    c = json.loads((train(_pets(petimages, 8), out=tmp_path / "c", **plain).path / "metrics.json").read_text())
    assert a["history"][1]["train_loss"] == pytest.approx(b["history"][1]["train_loss"], abs=1e-6)
    assert a["history"][1]["train_loss"] != pytest.approx(c["history"][1]["train_loss"], abs=1e-3)
    with pytest.raises(TransferlabError):
        train(_pets(petimages, 4), out=tmp_path / "d", **{**opts, "mixup": -1.0})


@pytest.mark.slow
def test_resume_keeps_the_checkpoints_backbone_and_input_size(petimages, tmp_path, monkeypatch):
    out = tmp_path / "r"
    with pytest.raises(SystemExit):
        train(_pets(petimages, 6), out=out, input_size=160, callbacks=[KillAfter(1)], **FT)
    with pytest.raises(RunError, match="--input-size 160"):
        train(_pets(petimages, 6), out=out, resume=out, input_size=192, **FT)
    with pytest.raises(RunError, match="efficientnet_lite0"):
        train(_pets(petimages, 6), out=out, resume=out, backbone="mobilenet_v2", **FT)
    run = train(_pets(petimages, 6), out=out, resume=out, **FT)  # size comes from the checkpoint
    assert run.data_config.input_size == 160 and run.config["preprocessing"]["input_size"] == 160


@pytest.mark.slow
def test_frozen_groups_run_in_onnxruntime_and_train_like_torch(petimages, tmp_path, monkeypatch):
    """--unfreeze last:K on a CPU whose engine is onnxruntime: the frozen groups' forward pass runs
    there, the rest in torch; the training is the same as all-torch (fp32, to rounding)."""
    opts = {**FT, "epochs": 1, "unfreeze": "last:2"}
    monkeypatch.setenv("TRANSFERLAB_BF16", "0")  # compare fp32 with fp32 (a bf16 CPU would autocast torch)
    runs = {}
    for engine in ("torch", "onnxruntime"):
        monkeypatch.setenv("TRANSFERLAB_ENGINE", engine)
        runs[engine] = train(_pets(petimages, 8), out=tmp_path / engine, **opts)
    cfg = {e: r.config["train"] for e, r in runs.items()}
    assert cfg["torch"]["frozen_groups_engine"] == "torch"
    assert cfg["onnxruntime"]["frozen_groups_engine"] == "onnxruntime"
    ha, hb = (json.loads((r.path / "metrics.json").read_text())["history"] for r in runs.values())
    assert hb[1]["train_loss"] == pytest.approx(ha[1]["train_loss"], abs=1e-3)
    assert hb[1]["val_loss"] == pytest.approx(ha[1]["val_loss"], abs=1e-3)
    wa, wb = (load_file(str(r.path / "model.safetensors")) for r in runs.values())
    base = create_backbone("efficientnet_lite0").model.trunk.state_dict()
    assert torch.equal(wb["trunk.blocks.0.0.conv_dw.weight"], base["blocks.0.0.conv_dw.weight"])  # frozen
    assert not torch.equal(wb["trunk.blocks.6.0.conv_pw.weight"], base["blocks.6.0.conv_pw.weight"])  # trained
    assert all(torch.allclose(wa[k], wb[k], atol=1e-4) for k in wa)


def test_frozen_prefix_needs_a_trunk_made_of_its_groups(monkeypatch):
    """A trunk whose forward is not its depth groups in order (here a skip connection across
    groups) keeps training in torch, with a warning; a plain one gets the same logits."""
    from torch import nn

    from transferlab.models.classifier import ImageClassifier, Normalize

    class Trunk(nn.Module):
        def __init__(self, skip: bool):
            super().__init__()
            self.skip = skip
            self.stem = nn.Conv2d(3, 4, 1)
            self.blocks = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1))
            self.pool = nn.AdaptiveAvgPool2d(1)

        def forward(self, x):
            h = self.stem(x)
            return self.pool(self.blocks(h) + (h if self.skip else 0)).flatten(1)

    monkeypatch.setenv("TRANSFERLAB_ENGINE", "onnxruntime")
    torch.manual_seed(0)
    cpu = torch.device("cpu")
    for skip in (True, False):
        model = ImageClassifier(Normalize((0.5,) * 3, (0.25,) * 3), Trunk(skip), nn.Linear(4, 2))
        groups = depth_groups(model.trunk)
        assert groups == [["stem"], ["blocks.0"], ["blocks.1"]]
        if skip:
            with pytest.warns(UserWarning, match="running torch"):
                assert frozen_prefix(model, groups, 1, 4, 16, cpu) is None
            continue
        keys = list(model.state_dict())
        prefix = frozen_prefix(model, groups, 1, 4, 16, cpu)
        x = torch.rand(3, 3, 16, 16)
        assert torch.allclose(prefix(x), model(x), atol=1e-5)  # a short batch is padded, then cut
        assert list(model.state_dict()) == keys and isinstance(model.trunk.stem, nn.Conv2d)  # untouched


@pytest.mark.slow
def test_wise_mixes_with_the_start_and_survives_resume(petimages, tmp_path, monkeypatch):
    """--wise A: the run keeps A x the fine-tuned weights + (1 - A) x the start (pretrained trunk,
    linear-probe head); a killed and resumed run mixes with the same start."""
    opts = {**FT, "unfreeze": "last:2"}
    full = train(_pets(petimages, 8), out=tmp_path / "full", **opts)
    with pytest.raises(SystemExit):
        train(_pets(petimages, 8), out=tmp_path / "wise", wise=0.5, callbacks=[KillAfter(1)], **opts)
    wise = train(_pets(petimages, 8), out=tmp_path / "wise", resume=tmp_path / "wise", **opts)
    assert wise.config["train"]["wise"] == 0.5  # kept from the checkpoint's options
    wf, ww = (load_file(str(r.path / "model.safetensors")) for r in (full, wise))
    base = create_backbone("efficientnet_lite0").model.trunk.state_dict()
    k = "blocks.6.0.conv_pw.weight"
    assert not torch.allclose(wf[f"trunk.{k}"], base[k], atol=1e-5)
    assert torch.allclose(ww[f"trunk.{k}"], 0.5 * wf[f"trunk.{k}"] + 0.5 * base[k], atol=1e-5)
    assert torch.equal(ww["trunk.blocks.0.0.conv_dw.weight"], base["blocks.0.0.conv_dw.weight"])  # frozen
    m = json.loads((wise.path / "metrics.json").read_text())
    _, va = _pets(petimages, 8).train_val_split(1 / 3, 0)
    probs = wise.predict_proba(va.paths)  # the reported validation metrics are the mixed network's
    from sklearn.metrics import confusion_matrix

    assert m["val"]["confusion"] == confusion_matrix(va.labels, probs.argmax(1), labels=[0, 1]).tolist()
    assert not list((wise.path / "checkpoint").glob("*.safetensors"))  # start/best cleaned up when done
    from transferlab.training.linear import fit_linear_probe

    tr, va = _pets(petimages, 8).train_val_split(1 / 3, 0)
    ft, fv = (extract(create_backbone("efficientnet_lite0"), d.paths, progress=False) for d in (tr, va))
    probe, _, _ = fit_linear_probe(ft.features, tr.labels, fv.features, va.labels, 2, 0)
    assert torch.allclose(ww["head.weight"], 0.5 * wf["head.weight"] + 0.5 * probe.weight, atol=1e-5)
    for bad in ({"wise": 0.0}, {"wise": 1.5}):
        with pytest.raises(TransferlabError, match=r"\bwise\b"):
            train(_pets(petimages, 4), out=tmp_path / "bad", **{**opts, **bad})
