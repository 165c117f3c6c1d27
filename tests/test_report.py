"""`ldlm report`: real held-out texts are judged in the model's own output form beside the samples."""

from __future__ import annotations

from ldlm.evaluation.untrained import real_reference

LONG = "The Mayor Said On Tuesday that " + " ".join(f"word{i}" for i in range(60))


class RecordingJudge:
    """Stands in for the judge LM: records what it was asked to score."""

    name = "recording"

    def __init__(self):
        self.seen: list[str] = []

    def perplexity(self, texts):
        self.seen = list(texts)
        return {"token_ppl": 42.0, "sample_ppl_mean": 43.0}


def test_real_texts_are_judged_truncated_to_L_and_detokenised(tiny_run):
    model, judge = tiny_run.model, RecordingJudge()
    out = real_reference(model, judge, [LONG, "A short one."])
    tokens = [len(model.encoder.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in judge.seen]
    assert tokens[0] == model.max_length - 2  # [CLS] ... [SEP] inside L positions: cut like a sample
    assert judge.seen[1] == "a short one." and judge.seen[0].startswith("the mayor said")  # uncased encoder
    assert (out["judge_ppl_real"], out["num_real_texts"]) == (42.0, 2) and out["real_stats"]["mean_words"] > 3
