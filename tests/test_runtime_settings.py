"""TRANSFERLAB_* switches: a bad value is a user error naming the variable, a good one does what it
says on every kind of CPU (bf16 forced on where the CPU has no native bf16, niceness relative to
the process)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from transferlab.errors import SettingError


@pytest.mark.parametrize("value", ["abc", "-20", "1.5", "20"])
def test_decode_nice_must_be_an_increment_0_to_19(monkeypatch, value):
    from transferlab.data.loader import default_nice

    monkeypatch.setenv("TRANSFERLAB_DECODE_NICE", value)
    with pytest.raises(SettingError, match="TRANSFERLAB_DECODE_NICE"):
        default_nice()


def test_decode_niceness_is_relative_and_capped(monkeypatch):
    from transferlab.data import loader

    monkeypatch.delenv("TRANSFERLAB_DECODE_NICE", raising=False)
    assert loader.default_nice() == 10
    monkeypatch.setenv("TRANSFERLAB_DECODE_NICE", " 0 ")
    assert loader.default_nice() == 0
    monkeypatch.setattr(os, "getpriority", lambda which, who: 15)  # the user ran us under `nice -n 15`
    assert loader.decode_niceness(10) == 19 and loader.decode_niceness(0) == 15


@pytest.mark.parametrize("value", ["2", "maybe"])
def test_bad_bf16_switch_is_a_user_error(monkeypatch, value):
    from transferlab.runtime.device import bf16_default

    monkeypatch.setenv("TRANSFERLAB_BF16", value)
    with pytest.raises(SettingError, match="TRANSFERLAB_BF16"):
        bf16_default(torch.device("cpu"))


def test_bad_flush_seconds_is_a_user_error(monkeypatch):
    from transferlab.features import flush_seconds

    monkeypatch.setenv("TRANSFERLAB_FLUSH_SECONDS", "soon")
    with pytest.raises(SettingError, match="TRANSFERLAB_FLUSH_SECONDS"):
        flush_seconds()
    monkeypatch.setenv("TRANSFERLAB_FLUSH_SECONDS", "0.5")
    assert flush_seconds() == 0.5


def test_bf16_forced_on_a_cpu_without_native_bf16(monkeypatch, sample_images):
    """TRANSFERLAB_BF16=1 where the CPU has no bf16 (AVX2 only): torch runs (onnxruntime is fp32
    only), autocast is bf16, and the features agree with fp32 to bf16 precision."""
    from transferlab.data.loader import decode_array
    from transferlab.models.registry import create_backbone
    from transferlab.runtime import device, engine
    from transferlab.runtime.runner import FeatureRunner

    monkeypatch.setattr(device, "cpu_has_bf16", lambda: False)
    monkeypatch.setattr(engine, "cpu_has_bf16", lambda: False)
    monkeypatch.delenv("TRANSFERLAB_ENGINE", raising=False)
    monkeypatch.setenv("TRANSFERLAB_BF16", "1")
    cpu = torch.device("cpu")
    assert engine.engine_default(cpu) == "torch" and device.precision_tag(cpu, "torch") == "bf16"
    bb = create_backbone("efficientnet_lite0")
    x = torch.from_numpy(np.stack([decode_array(sample_images[n], bb.data_config) for n in ("chelsea", "coffee")]))
    x = x.permute(0, 3, 1, 2)  # uint8 NHWC viewed as channels_last NCHW, as batches come
    bf16 = FeatureRunner(bb.model, cpu, batch_size=2)
    assert bf16.bf16 and bf16.engine == "torch"
    got = bf16(x).numpy()
    monkeypatch.setenv("TRANSFERLAB_BF16", "0")
    ref = FeatureRunner(bb.model, cpu, batch_size=2)
    assert not ref.bf16
    want = ref(x).numpy()
    cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cos.min() > 0.99


@pytest.mark.parametrize("amx, forced, want", [(True, None, torch.bfloat16), (False, None, None),
                                               (False, "1", torch.bfloat16), (True, "0", None)])
def test_cpu_training_autocasts_bf16_only_with_amx(monkeypatch, amx, forced, want):
    """On a bf16 CPU without AMX inference stays bf16 (faster there) but fine-tuning runs fp32
    (bf16 made its epochs 1.5x slower); AMX keeps bf16; TRANSFERLAB_BF16 overrides both."""
    from transferlab.runtime import device

    monkeypatch.setattr(device, "cpu_has_bf16", lambda: True)
    monkeypatch.setattr(device, "cpu_has_amx", lambda: amx)
    if forced is None:
        monkeypatch.delenv("TRANSFERLAB_BF16", raising=False)
    else:
        monkeypatch.setenv("TRANSFERLAB_BF16", forced)
    cpu = torch.device("cpu")
    assert device.amp_dtype(cpu) == (want, False)
    assert device.bf16_default(cpu) == (forced != "0")
