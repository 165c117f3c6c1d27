"""Large corpora: texts streamed from files (and through ``datasets`` streaming), token files read row by row with
bounded memory, the sharded feature cache, and the LDLM recipe trained from a stream."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from ldlm.data import DatasetError, build_features, pack_texts
from ldlm.data.streaming import stream_hub, stream_texts
from ldlm.data.token_file import TokenRows, streamed_corpus, write_token_file

ROOT = Path(__file__).resolve().parents[1]
TEXTS = [f"Sentence number {i} tells a short story about item {i % 7} and its owner." for i in range(60)]


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from ldlm.storage.resources import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model("minilm-l6"))


def _jsonl(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path


# ----------------------------------------------------------------------------- text streams


def test_local_files_stream_lazily(tmp_path):
    path = _jsonl(tmp_path / "c.jsonl", TEXTS[:3])
    with path.open("a") as f:
        f.write("{broken json\n")
    texts = stream_texts(str(path))
    assert [next(texts) for _ in range(3)] == TEXTS[:3]  # read before the bad line is reached
    with pytest.raises(DatasetError, match="line 4"):
        next(texts)
    (tmp_path / "c.txt").write_text("one\n\ntwo\n")
    assert list(stream_texts(str(tmp_path / "c.txt"))) == ["one", "two"]
    (tmp_path / "c.csv").write_text("body\nx\ny\n")
    assert list(stream_texts(str(tmp_path / "c.csv"), field="body")) == ["x", "y"]
    with pytest.raises(DatasetError, match="unknown dataset"):
        stream_texts(str(tmp_path / "missing.jsonl"))


def test_hub_names_stream_through_datasets(monkeypatch):
    calls = []

    def load_dataset(hub_id, config, *, split, streaming, data_files):
        calls.append((hub_id, config, split, streaming, data_files))
        return iter([{"text": "a"}, {"text": "b"}])

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert list(stream_texts("openwebtext")) == ["a", "b"]
    assert list(stream_texts("wikipedia", split="train")) == ["a", "b"]
    assert calls == [
        ("Skylion007/openwebtext", None, "train", True, None),
        ("wikimedia/wikipedia", "20231101.en", "train", True, None),
    ]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DatasetError, match="HF_HUB_OFFLINE"):
        next(stream_texts("lm1b"))


def test_datasets_streaming_reads_a_local_file(tmp_path):
    pytest.importorskip("datasets")
    path = _jsonl(tmp_path / "c.jsonl", TEXTS)
    assert list(stream_hub("json", data_files=str(path))) == TEXTS  # the hub code path, offline


# ----------------------------------------------------------------------------- token files


def test_token_file_rows_equal_in_memory_packing(tmp_path, tokenizer):
    meta = write_token_file(iter(TEXTS), tokenizer, tmp_path / "t.bin", batch_texts=7)
    rows = TokenRows(tmp_path / "t.bin", 16)
    packed = pack_texts(tokenizer, TEXTS, 16)  # the MDLM protocol, in memory
    assert meta["texts"] == 60 and meta["dtype"] == "uint16" and len(rows) == len(packed)
    assert torch.equal(rows.rows(torch.arange(len(rows))), packed)
    batch = rows.batch(torch.tensor([3, 0]))
    assert torch.equal(batch["input_ids"], packed[[3, 0]]) and batch["attention_mask"].all()
    clone = pickle.loads(pickle.dumps(rows))  # DataLoader workers: reopened by path
    assert torch.equal(clone.rows([5]), packed[[5]])
    with pytest.raises(IndexError):
        rows.rows([len(rows)])
    with (tmp_path / "t.bin").open("ab") as f:
        f.write(b"\x00")  # a file that does not match its metadata
    with pytest.raises(DatasetError, match="bytes"):
        TokenRows(tmp_path / "t.bin", 16)


def test_streamed_corpus_holds_out_the_first_texts_and_caches(tmp_path, tokenizer):
    path = _jsonl(tmp_path / "c.jsonl", TEXTS)
    valid, rows = streamed_corpus(str(path), tokenizer, 16, validation=10, max_texts=40, cache_dir=tmp_path / "cache")
    assert valid == TEXTS[:10] and rows.meta["texts"] == 40
    assert torch.equal(rows.rows(torch.arange(len(rows))), pack_texts(tokenizer, TEXTS[10:50], 16)[: len(rows)])
    files = sorted(p.name for p in (tmp_path / "cache").iterdir())
    again = streamed_corpus(str(path), tokenizer, 16, validation=10, max_texts=40, cache_dir=tmp_path / "cache")[1]
    assert again.path == rows.path and sorted(p.name for p in (tmp_path / "cache").iterdir()) == files
    with pytest.raises(DatasetError, match="fewer than validation_size"):
        streamed_corpus(str(path), tokenizer, 16, validation=61, cache_dir=tmp_path / "cache")


def test_streaming_keeps_memory_bounded_for_a_corpus_larger_than_the_cap(tmp_path):
    """A 20 MiB corpus (about 1.3 M tokens as int64 lists would take several times that) is tokenised into a
    token file and read for a full epoch of random batches with peak RSS growth under a 16 MiB cap."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from streaming_rss import make_corpus

    corpus = tmp_path / "corpus.jsonl"
    size_mib = make_corpus(corpus, 20) / (1 << 20)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, str(ROOT / "benchmarks" / "streaming_rss.py"), "--child", "stream", str(corpus)]
    out = subprocess.run([*cmd, str(tmp_path), "128", "256"], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    cap = 16.0
    assert size_mib > cap and report["rows"] > 1000
    assert report["growth_mib"] < cap, report


# ----------------------------------------------------------------------------- sharded feature cache


def test_feature_cache_is_sharded_on_disk(tmp_path):
    from ldlm.model.encoders import FrozenEncoder

    encoder = FrozenEncoder("minilm-l6")
    texts = TEXTS[:9]
    row_bytes = 16 * encoder.hidden_size * 2
    sharded = build_features(encoder, texts, 16, cache_dir=tmp_path / "a", progress=False, shard_bytes=4 * row_bytes)
    whole = build_features(encoder, texts, 16, cache_dir=tmp_path / "b", progress=False)
    shards = sorted(p.name for p in sharded.path.glob("features-*.npy"))
    assert shards == ["features-00000.npy", "features-00001.npy", "features-00002.npy"]  # 4 + 4 + 1 rows
    assert [s["rows"] for s in json.loads((sharded.path / "meta.json").read_text())["shards"]] == [4, 4, 1]
    assert sharded.features.shape == whole.features.shape == (9, 16, encoder.hidden_size)
    order = torch.tensor([8, 0, 4, 3, 5])
    assert torch.equal(sharded.batch(order)["h"], whole.batch(order)["h"])
    np.testing.assert_array_equal(sharded.features[2:7], whole.features[2:7])
    np.testing.assert_array_equal(sharded.features[-1], whole.features[8])
    np.testing.assert_array_equal(np.asarray(pickle.loads(pickle.dumps(sharded)).features), np.asarray(whole.features))
    # an entry of the earlier single-file layout (no shard list) still reads
    legacy = json.loads((whole.path / "meta.json").read_text())
    del legacy["shards"]
    (whole.path / "features-00000.npy").rename(whole.path / "features.npy")
    (whole.path / "meta.json").write_text(json.dumps(legacy))
    again = build_features(encoder, texts, 16, cache_dir=tmp_path / "b", progress=False)
    assert torch.equal(again.batch(order)["h"], sharded.batch(order)["h"])


# ----------------------------------------------------------------------------- the recipe on a stream


def test_ldlm_trains_from_a_stream(tmp_path):
    from ldlm import cli

    corpus = _jsonl(tmp_path / "c.jsonl", TEXTS * 4)
    args = [
        "train", "ldlm_tiny", f"output_dir={tmp_path}/{{name}}", f"data.dataset={corpus}", "data.streaming=true",
        "data.validation_size=40", "data.max_texts=150", "joint_train.steps=4", "joint_train.save_every=2",
        "decoder_train.steps=0", "--quiet",
    ]  # fmt: skip
    assert cli.main(args) == 0
    summary = json.loads((tmp_path / "ldlm_tiny" / "summary.json").read_text())
    assert summary["train_texts"] == 150 and summary["valid_texts"] == 40 and summary["train_rows"] > 0
    assert cli.main(["train", "tiny", "data.streaming=true"]) == 2  # COSMOS reads texts in memory: a clear error
