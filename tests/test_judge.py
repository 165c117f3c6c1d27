"""Gen. PPL judge: protocol arithmetic recomputed by hand, batching invariance, and input errors."""

import math
import random
from types import SimpleNamespace

import pytest
import torch

from ldlm.evaluation import JudgeLM

SENTENCE = "The government announced on Tuesday that it would raise taxes on fuel to pay for new roads and schools."
SHORT = "She opened the door and smiled."


def shuffled(text: str, seed: int = 0) -> str:
    words = text.split()
    random.Random(seed).shuffle(words)
    return " ".join(words)


@pytest.fixture(scope="module")
def judge():
    return JudgeLM("smollm2-135m", batch_size=2)


def nll_by_hand(judge: JudgeLM, text: str) -> tuple[float, int]:
    """Unbatched, unpadded: BOS + tokens, sum of -log p(token | prefix) over every token after BOS."""
    ids = [judge.tokenizer.bos_token_id, *judge.tokenizer(text, add_special_tokens=False)["input_ids"]]
    x = torch.tensor([ids])
    with torch.no_grad():
        logp = torch.log_softmax(judge.model(input_ids=x).logits[0, :-1].double(), dim=-1)
    return -logp.gather(1, x[0, 1:, None]).sum().item(), len(ids) - 1


def test_real_text_scores_far_better_than_shuffled(judge):
    real = judge.perplexity([SENTENCE])["token_ppl"]
    salad = judge.perplexity([shuffled(SENTENCE)])["token_ppl"]
    assert real < 150
    assert salad > 5 * real


def test_token_ppl_matches_hand_computation(judge):
    texts = [SENTENCE, SHORT]  # different lengths: the short one is right-padded in the batch
    out = judge.perplexity(texts)
    by_hand = [nll_by_hand(judge, t) for t in texts]
    total_nll = sum(s for s, _ in by_hand)
    total_tok = sum(n for _, n in by_hand)
    assert out["num_tokens"] == total_tok
    assert out["num_texts"] == 2 and out["num_dropped"] == 0 and out["judge"] == "smollm2-135m"
    assert out["token_ppl"] == pytest.approx(math.exp(total_nll / total_tok), rel=1e-4)
    sample_mean = sum(math.exp(s / n) for s, n in by_hand) / 2
    assert out["sample_ppl_mean"] == pytest.approx(sample_mean, rel=1e-4)


def test_batching_and_padding_do_not_change_per_text_nll(judge, monkeypatch):
    texts = [SENTENCE, SHORT, shuffled(SENTENCE)]
    batched = judge.token_nll(texts)
    batched_ppl = judge.perplexity(texts)
    monkeypatch.setattr(judge, "batch_size", 1)
    single = judge.token_nll(texts)
    single_ppl = judge.perplexity(texts)
    for (sb, nb), (ss, ns) in zip(batched, single, strict=True):
        assert nb == ns
        assert sb / nb == pytest.approx(ss / ns, abs=1e-4)
    for key in ("token_ppl", "sample_ppl_mean"):
        assert batched_ppl[key] == pytest.approx(single_ppl[key], rel=1e-4)


def test_empty_texts_are_dropped_and_counted(judge):
    out = judge.perplexity([SHORT, "", "   \n"])
    assert out["num_texts"] == 1 and out["num_dropped"] == 2
    assert out["token_ppl"] == pytest.approx(judge.perplexity([SHORT])["token_ppl"], rel=1e-6)


def test_truncation_keeps_bos_within_max_length(judge, monkeypatch):
    monkeypatch.setattr(judge, "max_length", 5)
    ids = judge.encode(SENTENCE)
    assert len(ids) == 5 and ids[0] == judge.tokenizer.bos_token_id
    assert judge.perplexity([SENTENCE])["num_tokens"] == 4


def test_empty_input_errors(judge):
    with pytest.raises(ValueError, match="empty"):
        judge.perplexity([])
    with pytest.raises(ValueError, match="empty or whitespace"):
        judge.perplexity(["", "  "])
    with pytest.raises(TypeError):
        judge.perplexity(SENTENCE)


def test_non_finite_result_raises(judge, monkeypatch):
    monkeypatch.setattr(judge, "token_nll", lambda texts: [(float("nan"), 3)])
    with pytest.raises(FloatingPointError):
        judge.perplexity([SHORT])


def test_start_token_falls_back_to_eos_then_errors(judge, monkeypatch):
    import transformers

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: judge.model)
    fake = SimpleNamespace(bos_token_id=None, eos_token_id=7, pad_token_id=None)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: fake)
    j = JudgeLM("smollm2-135m")
    assert j.start_id == 7 and j.pad_id == 7
    fake.eos_token_id = None
    with pytest.raises(ValueError, match="neither a BOS nor an EOS"):
        JudgeLM("smollm2-135m")
