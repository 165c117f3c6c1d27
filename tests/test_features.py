"""Frozen-feature cache: correctness of cached h, cache hits, keys, rebuilds and torch datasets."""

from __future__ import annotations

import pickle
import shutil
import threading
import time

import numpy as np
import pytest
import torch

from ldlm.data import (
    FeatureSet,
    build_features,
    cache_key,
    tokenize_texts,
)
from ldlm.data import features as features_mod

TEXTS = [
    "The cat sat on the mat.",
    "Hello world.",
    "Rain fell over the quiet town all night.",
    "She smiled.",
    "A very long sentence that keeps going and going well past the tiny maximum length we allow here.",
]
MAX_LENGTH = 16


@pytest.fixture(scope="module")
def encoder():
    from ldlm.model.encoders import FrozenEncoder

    return FrozenEncoder("minilm-l6")


def _no_encoder_calls(monkeypatch, encoder):
    def boom(*args, **kwargs):
        raise AssertionError("the encoder ran although the cache should have been used")

    monkeypatch.setattr(encoder, "forward", boom)


def test_features_match_encoder_and_zero_at_pads(encoder, tmp_path):
    with pytest.warns(UserWarning, match="1 of 5 texts"):
        fs = build_features(encoder, TEXTS, MAX_LENGTH, cache_dir=tmp_path, batch_size=2, progress=False)
    n, d = len(TEXTS), encoder.hidden_size
    assert len(fs) == n and fs.features.shape == (n, MAX_LENGTH, d) and fs.features.dtype == np.float16
    assert isinstance(fs.features, np.memmap) and fs.num_truncated == 1
    assert fs.path == tmp_path / fs.key and (fs.path / "meta.json").is_file()

    with pytest.warns(UserWarning, match="truncated"):
        tok = tokenize_texts(encoder.tokenizer, TEXTS, MAX_LENGTH)
    assert torch.equal(fs.input_ids, tok.input_ids) and torch.equal(fs.attention_mask, tok.attention_mask)
    ref = encoder(tok.input_ids, tok.attention_mask)  # (n, L, D) float32 at full length
    batch = fs.batch(range(n))
    assert batch["h"].dtype == torch.float32 and batch["h"].shape == (n, MAX_LENGTH, d)
    real = tok.attention_mask.bool()
    torch.testing.assert_close(batch["h"][real], ref[real], atol=2e-2, rtol=2e-3)
    assert (batch["h"][~real] == 0).all()
    # indices in any order / as a tensor
    sub = fs.batch(torch.tensor([3, 0]))
    assert torch.equal(sub["input_ids"], tok.input_ids[[3, 0]]) and torch.equal(sub["h"], batch["h"][[3, 0]])


def test_second_build_is_cache_hit(encoder, tmp_path, monkeypatch):
    first = build_features(encoder, TEXTS[:3], MAX_LENGTH, cache_dir=tmp_path, progress=False)
    _no_encoder_calls(monkeypatch, encoder)
    second = build_features(encoder, TEXTS[:3], MAX_LENGTH, cache_dir=tmp_path, progress=False)
    assert second.key == first.key and second.path == first.path
    assert np.array_equal(np.asarray(second.features), np.asarray(first.features))
    assert [p.name for p in tmp_path.iterdir()] == [first.key]  # no temp dirs left behind


def test_key_depends_on_layer_length_texts_and_encoder():
    base = cache_key("minilm-l6", "/m", -1, 64, ["a", "b"])
    assert len(base) == 16 and int(base, 16) >= 0
    assert base == cache_key("minilm-l6", "/m", -1, 64, ["a", "b"])
    others = [
        cache_key("minilm-l6", "/m", -2, 64, ["a", "b"]),
        cache_key("minilm-l6", "/m", -1, 32, ["a", "b"]),
        cache_key("minilm-l6", "/m", -1, 64, ["a", "c"]),
        cache_key("minilm-l6", "/m", -1, 64, ["a\x00b"]),
        cache_key("minilm-l6", "/m", -1, 64, ["b", "a"]),
        cache_key("mpnet", "/m", -1, 64, ["a", "b"]),
        cache_key("minilm-l6", "/other", -1, 64, ["a", "b"]),
    ]
    assert len({base, *others}) == len(others) + 1


@pytest.mark.parametrize("damage", ["no_meta", "bad_shape"])
def test_damaged_entry_is_rebuilt(encoder, tmp_path, damage):
    fs = build_features(encoder, TEXTS[:2], MAX_LENGTH, cache_dir=tmp_path, progress=False)
    good = np.asarray(fs.features).copy()
    if damage == "no_meta":
        (fs.path / "meta.json").unlink()
    else:
        np.save(fs.path / "input_ids.npy", np.zeros((7, 3), dtype=np.int64))
    del fs
    with pytest.warns(UserWarning, match="rebuilding"):
        rebuilt = build_features(encoder, TEXTS[:2], MAX_LENGTH, cache_dir=tmp_path, progress=False)
    assert (rebuilt.path / "meta.json").is_file() and rebuilt.input_ids.shape == (2, MAX_LENGTH)
    np.testing.assert_allclose(np.asarray(rebuilt.features), good, atol=1e-2)


def test_concurrent_creator_wins_race(encoder, tmp_path, monkeypatch):
    other = build_features(encoder, TEXTS[:2], MAX_LENGTH, cache_dir=tmp_path / "other", progress=False)
    real_write = features_mod._write_entry

    def write_then_lose_race(tmp, *args, **kwargs):
        real_write(tmp, *args, **kwargs)
        shutil.copytree(other.path, tmp.parent / other.key)  # another process finished first

    monkeypatch.setattr(features_mod, "_write_entry", write_then_lose_race)
    fs = build_features(encoder, TEXTS[:2], MAX_LENGTH, cache_dir=tmp_path / "mine", progress=False)
    assert fs.path == tmp_path / "mine" / other.key
    assert [p.name for p in (tmp_path / "mine").iterdir()] == [other.key]


def test_concurrent_builders_encode_once(encoder, tmp_path, monkeypatch):
    """Two builders of one entry: the second waits on the build lock and reuses the entry (one encoding)."""
    real_write = features_mod._write_entry
    started, writes = threading.Event(), []

    def slow_write(*args, **kwargs):
        writes.append(1)
        started.set()
        time.sleep(0.5)  # long enough for the second builder to reach the lock
        real_write(*args, **kwargs)

    monkeypatch.setattr(features_mod, "_write_entry", slow_write)
    results = {}

    def build(name):
        results[name] = build_features(encoder, TEXTS[:2], MAX_LENGTH, cache_dir=tmp_path, progress=False)

    first = threading.Thread(target=build, args=("first",))
    first.start()
    assert started.wait(30)
    second = threading.Thread(target=build, args=("second",))
    second.start()
    first.join()
    second.join()
    assert len(writes) == 1
    assert results["first"].path == results["second"].path
    assert np.array_equal(np.asarray(results["first"].features), np.asarray(results["second"].features))


def test_feature_set_pickles_by_path(encoder, tmp_path):
    fs = build_features(encoder, TEXTS[:3], MAX_LENGTH, cache_dir=tmp_path, progress=False)
    clone = pickle.loads(pickle.dumps(fs))  # by path: the memmap is reopened, not copied
    assert isinstance(clone, FeatureSet) and isinstance(clone.features, np.memmap)
    assert np.array_equal(np.asarray(clone.features), np.asarray(fs.features))
