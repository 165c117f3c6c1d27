"""Pair datasets for seq2seq: templates, bad rows, the held-out split, config validation."""

from __future__ import annotations

import json

import pytest

from ldlm.config import ConfigError, load_config
from ldlm.data.pairs import PAIR_DATASETS, load_pairs, split_pairs
from ldlm.data.registry import DatasetError


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_triples_join_context_and_answer(tmp_path):
    f = _write(tmp_path / "qg.jsonl", [{"context": "Paris is in France.", "answer": "France", "question": "Where?"}])
    pairs = load_pairs(f, source_template="{answer} [SEP] {context}", target_field="question")
    assert pairs.sources == ["France [SEP] Paris is in France."] and pairs.targets == ["Where?"]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"source": "a"}, "line 2: no field 'target'.*seq2seq.target_field"),
        ({"src": "a", "target": "b"}, "line 2: no field 'source'.*seq2seq.source_template"),
        ({"source": "  ", "target": "b"}, "line 2: empty source"),
        ({"source": "a", "target": ""}, "line 2: empty target"),
        ({"source": 3, "target": "b"}, "not text"),
    ],
)
def test_bad_rows_name_the_line_and_the_fix(tmp_path, row, message):
    f = _write(tmp_path / "p.jsonl", [{"source": "ok", "target": "fine"}, row])
    with pytest.raises(DatasetError, match=message):
        load_pairs(f)


def test_split_is_seeded_and_held_out_texts_never_train(tmp_path):
    rows = [{"source": f"s{i % 30}", "target": f"t{i}"} for i in range(60)]  # sources repeat across pairs
    pairs = load_pairs(_write(tmp_path / "p.jsonl", rows))
    train, valid = split_pairs(pairs, 10, seed=3)
    again, _ = split_pairs(pairs, 10, seed=3)
    assert len(valid) == 10 and train.targets == again.targets
    assert not set(train.sources) & set(valid.sources) and not set(train.targets) & set(valid.targets)


def test_registry_names_and_unknown_dataset():
    assert {"qqp", "quoref-qg", "xsum", "xsum-hub", "squad2-qg-hub", "paradetox-hub"} <= set(PAIR_DATASETS)
    with pytest.raises(DatasetError, match="unknown pair dataset"):
        load_pairs("no-such-pairs")


def test_seq2seq_config_validation():
    with pytest.raises(ConfigError, match="seq2seq.condition_dropout"):
        load_config("seq2seq_tiny", ["seq2seq.condition_dropout=1.5"])
    with pytest.raises(ConfigError, match="seq2seq_train.steps"):
        load_config("seq2seq_tiny", ["seq2seq_train.steps=0"])
    with pytest.raises(ConfigError, match="seq2seq.source_max_length"):
        load_config("seq2seq_tiny", ["seq2seq.source_max_length=2"])
    for preset in ("seq2seq_xsum", "seq2seq_squad2", "seq2seq_paradetox", "seq2seq_qqp", "seq2seq_qqp_cpu",
                   "seq2seq_qg_cpu", "seq2seq_xsum_cpu", "seq2seq_paradetox_cpu"):  # fmt: skip
        assert load_config(preset).recipe == "seq2seq"
