"""Feature extraction: batched equals single-image, cache hits, interrupted runs resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from transferlab import features as F
from transferlab.data.images import load_rgb
from transferlab.features import cache, extraction
from transferlab.models.registry import create_backbone


def _paths(petimages, n):
    return [petimages / "Cat" / f"{i}.jpg" for i in range(n // 2)] + [petimages / "Dog" / f"{i}.jpg"
                                                                        for i in range(n // 2)]


def test_batched_features_match_single_image_fp32(petimages):
    bb = create_backbone()
    paths = _paths(petimages, 6)
    got = F.extract(bb, paths, cache=False, progress=False).features
    with torch.no_grad():
        ref = torch.cat([bb.model.features(bb.data_config.preprocess(load_rgb(p))[None]) for p in paths]).numpy()
    cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() > 0.995  # bf16 autocast where the CPU has it; fp32 reference


def test_cache_second_run_extracts_nothing(petimages, tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFERLAB_CACHE", str(tmp_path / "cache"))  # earlier tests may have cached these photos
    bb = create_backbone()
    paths = _paths(petimages, 8)
    a = F.extract(bb, paths, progress=False)
    b = F.extract(bb, paths, progress=False)
    assert a.extracted == 8 and b.extracted == 0
    np.testing.assert_array_equal(a.features, b.features)


def test_changed_file_is_re_extracted(tmp_path, petimages):
    import shutil

    bb = create_backbone()
    f = tmp_path / "x.jpg"
    shutil.copy(petimages / "Cat" / "3.jpg", f)
    first = F.extract(bb, [f], progress=False)
    shutil.copy(petimages / "Dog" / "3.jpg", f)
    second = F.extract(bb, [f], progress=False)
    assert second.extracted == 1 and not np.allclose(first.features, second.features)


def test_cache_key_fast_path_matches_resolve(tmp_path, monkeypatch):
    """file_keys' one-lstat route gives Path.resolve's keys (existing caches stay valid) through
    directory symlinks, '..', relative paths, a symlinked file and a missing one (issue 16)."""
    (tmp_path / "real" / "sub").mkdir(parents=True)
    (tmp_path / "real" / "sub" / "a.jpg").write_bytes(b"x")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    (tmp_path / "real" / "sub" / "b.jpg").symlink_to(tmp_path / "real" / "sub" / "a.jpg")
    monkeypatch.chdir(tmp_path)
    cases = [str(tmp_path / "link" / "sub" / "a.jpg"), "link/sub/a.jpg", "link/sub/../sub/a.jpg",
             "link//sub/a.jpg", "real/sub/b.jpg", "real/sub/a.jpg/", "nope.jpg", "real/sub", "./link/sub/a.jpg"]
    assert F.file_keys(cases) == [F.file_key(c) for c in cases]
    assert len(set(F.file_keys(cases[:5]))) == 1  # one file, however it is reached


def test_interrupted_extraction_resumes(monkeypatch, petimages, tmp_path):
    monkeypatch.setenv("TRANSFERLAB_CACHE", str(tmp_path / "cache"))  # whatever other tests cached
    bb = create_backbone()
    paths = [petimages / c / f"{i}.jpg" for c in ("Cat", "Dog") for i in range(300, 312)]  # not cached yet
    monkeypatch.setattr(cache, "SHARD", 8)
    real = extraction.run_features

    def dying(*a, **kw):
        for i, b in enumerate(real(*a, **kw)):
            if i == 2:
                raise KeyboardInterrupt  # killed in the middle of the third batch
            yield b

    monkeypatch.setattr(extraction, "run_features", dying)
    with pytest.raises(KeyboardInterrupt):
        F.extract(bb, paths, batch_size=8, progress=False)
    monkeypatch.setattr(extraction, "run_features", real)
    resumed = F.extract(bb, paths, batch_size=8, progress=False)
    assert resumed.extracted == 8  # 16 already in complete shards
    full = F.extract(bb, paths, cache=False, progress=False)
    np.testing.assert_allclose(resumed.features, full.features, atol=1e-4)


def test_damaged_shard_is_ignored(petimages):
    bb = create_backbone()
    paths = _paths(petimages, 4)
    F.extract(bb, paths, progress=False)
    d = F.cache_root() / "features"
    shard = sorted(d.rglob("shard-*.safetensors"))[0]
    (shard.parent / "shard-zzzz-garbage.safetensors").write_bytes(b"\x00garbage")
    again = F.extract(bb, paths, progress=False)
    assert again.ok.all()
