"""The causal-LM frozen encoder path (LDLM: GPT-2 hidden_states[-3]) on a tiny local GPT-2, packed features, and the
checks that need the encoder's config: layer range, token decoder vocabulary."""

from __future__ import annotations

import pytest
import torch
from ldlm_helpers import tiny_config

from ldlm.config import ConfigError
from ldlm.data import build_features, cache_key, pack_texts
from ldlm.model.encoders import FrozenEncoder, check_encoder_config
from ldlm.storage.resources import ModelNotFoundError, resolve_model


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory):
    """A randomly initialised 3-layer GPT-2 with the real GPT-2 tokenizer, saved like a hub checkpoint."""
    from transformers import AutoTokenizer, GPT2Config, GPT2Model

    try:
        tok_dir = resolve_model("gpt2-tokenizer")
    except ModelNotFoundError as err:
        pytest.skip(f"GPT-2 tokenizer package not installed: {err}")
    path = tmp_path_factory.mktemp("tiny_gpt2")
    torch.manual_seed(0)
    GPT2Model(GPT2Config(n_layer=3, n_embd=32, n_head=4, n_positions=64)).save_pretrained(path)
    AutoTokenizer.from_pretrained(tok_dir).save_pretrained(path)
    return str(path)


def test_causal_encoder_reads_the_third_to_last_hidden_state(tiny_gpt2):
    enc = FrozenEncoder(tiny_gpt2, layer=-3)
    assert type(enc.model).__name__ == "GPT2Model" and enc.hidden_size == 32 and enc.vocab_size == 50257
    assert enc.tokenizer.pad_token_id == enc.tokenizer.eos_token_id  # GPT-style: pad with EOS
    ids = torch.tensor(enc.tokenizer(["the cat sat on the mat", "rain fell all night"], padding=True)["input_ids"])
    mask = (ids != enc.tokenizer.pad_token_id).long()
    h = enc(ids, mask)
    states = _full_hidden_states(tiny_gpt2, ids, mask)
    assert len(states) == 4  # embeddings + 3 layers
    assert torch.equal(h, states[-3]) and torch.equal(h, states[1]) and not torch.equal(h, states[-1])


def _full_hidden_states(path, ids, mask):
    from transformers import GPT2Model

    model = GPT2Model.from_pretrained(path).eval()
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states


@pytest.mark.parametrize("layer", [0, 1, -3, -2, -1, 3])
def test_encoder_runs_only_the_blocks_its_layer_needs(tiny_gpt2, layer):
    """Blocks after the chosen layer are dropped (one kept for GPT-2's final ln_f); h is unchanged bit for bit."""
    enc = FrozenEncoder(tiny_gpt2, layer=layer)
    index = layer % 4
    assert enc.kept_layers == min(index + 1, 3) == len(enc.model.h)
    ids = torch.tensor(enc.tokenizer(["the cat sat on the mat", "rain fell"], padding=True)["input_ids"])
    mask = (ids != enc.tokenizer.pad_token_id).long()
    assert torch.equal(enc(ids, mask), _full_hidden_states(tiny_gpt2, ids, mask)[layer])


def test_packed_features_of_a_causal_encoder(tiny_gpt2, tmp_path):
    enc = FrozenEncoder(tiny_gpt2, layer=-3)
    texts = ["the cat sat on the mat.", "rain fell all night.", "she smiled at him and left the room."] * 4
    fs = build_features(enc, texts, 8, cache_dir=tmp_path, packing=True, progress=False)
    expected = pack_texts(enc.tokenizer, texts, 8)
    assert torch.equal(fs.input_ids, expected) and bool(fs.attention_mask.all())
    assert (expected == enc.tokenizer.eos_token_id).sum() >= 1  # EOS separates the texts, no padding
    cached = torch.from_numpy(fs.features[:2].astype("float32"))  # float16 on disk
    torch.testing.assert_close(cached, enc(expected[:2], fs.attention_mask[:2]), rtol=1e-3, atol=1e-3)
    padded = build_features(enc, texts, 16, cache_dir=tmp_path, progress=False)
    assert padded.key != fs.key and len(padded) == len(texts)  # packed and padded entries never collide
    ends = padded.attention_mask.sum(1) - 1  # padded rows end in a real EOS; entries from before it are not reused
    assert (padded.input_ids[torch.arange(len(texts)), ends] == enc.tokenizer.eos_token_id).all()
    assert padded.key != cache_key(enc.name, enc.path, enc.layer, 16, texts)


def test_encoder_layer_out_of_range_fails_validation(tiny_gpt2):
    cfg = tiny_config(f"encoder.name={tiny_gpt2}", "encoder.layer=-5", "autoencoder.token_decoder_heads=4")
    with pytest.raises(ConfigError, match=r"encoder\.layer=-5.*encoder\.name"):
        check_encoder_config(cfg)
    check_encoder_config(
        tiny_config(f"encoder.name={tiny_gpt2}", "encoder.layer=-4", "autoencoder.token_decoder_heads=4")
    )


def test_token_decoder_vocabulary_must_be_the_tokenizers(tiny_gpt2):
    cfg = tiny_config(f"encoder.name={tiny_gpt2}", "autoencoder.vocab_size=30522", "autoencoder.token_decoder_heads=4")
    with pytest.raises(ConfigError, match=r"autoencoder\.vocab_size=30522.*50257.*encoder\.name"):
        check_encoder_config(cfg)
    check_encoder_config(tiny_config(f"encoder.name={tiny_gpt2}", "autoencoder.vocab_size=50257",
                                     "autoencoder.token_decoder_heads=4"))  # fmt: skip


def test_token_decoder_heads_must_divide_the_hidden_size(tiny_gpt2):
    cfg = tiny_config(f"encoder.name={tiny_gpt2}", "autoencoder.token_decoder_heads=5")
    with pytest.raises(ConfigError, match="autoencoder.token_decoder_heads"):
        check_encoder_config(cfg)


def test_prefix_bos_reads_h_after_a_prepended_bos_and_drops_it(tiny_gpt2, tmp_path):
    """encoder.prefix_bos: h of [BOS] + w without the BOS position, so position 0 is not the attention sink."""
    enc = FrozenEncoder(tiny_gpt2, layer=-3, prefix_bos=True)
    ids = torch.tensor(enc.tokenizer(["the cat sat on the mat", "rain fell all night"], padding=True)["input_ids"])
    mask = (ids != enc.tokenizer.pad_token_id).long()
    bos = torch.full((2, 1), enc.tokenizer.eos_token_id)  # GPT-2: BOS = EOS = <|endoftext|>
    states = _full_hidden_states(tiny_gpt2, torch.cat([bos, ids], 1), torch.cat([torch.ones_like(bos), mask], 1))
    h = enc(ids, mask)
    assert h.shape == (*ids.shape, 32) and torch.equal(h, states[-3][:, 1:])
    plain = FrozenEncoder(tiny_gpt2, layer=-3)(ids, mask)
    assert not torch.allclose(h[:, 0], plain[:, 0])  # the first token now has left context
    texts = ["the cat sat on the mat.", "rain fell all night."]
    with_bos = build_features(enc, texts, 8, cache_dir=tmp_path, progress=False)
    without = build_features(FrozenEncoder(tiny_gpt2, layer=-3), texts, 8, cache_dir=tmp_path, progress=False)
    assert with_bos.key != without.key  # never served each other's features


def test_prefix_bos_is_refused_where_it_means_nothing(tiny_gpt2):
    check_encoder_config(tiny_config(f"encoder.name={tiny_gpt2}", "encoder.prefix_bos=true",
                                     "autoencoder.token_decoder_heads=4"))  # fmt: skip
    with pytest.raises(ConfigError, match=r"encoder\.prefix_bos=true.*\[CLS\]"):  # BERT-style: [CLS] is first
        check_encoder_config(tiny_config("encoder.name=minilm-l6", "encoder.prefix_bos=true"))
    with pytest.raises(ConfigError, match=r"encoder\.prefix_bos=true needs encoder\.kind=frozen"):
        tiny_config("encoder.prefix_bos=true", "encoder.kind=trainable_embeddings", "joint.reconstruction=ce")
