"""Generative perplexity ("Gen. PPL") of texts under a frozen causal-LM judge.

Protocol (fixed so numbers are comparable across runs):

1. Each text is retokenised with the judge's own tokenizer (no special tokens added by the tokenizer).
2. One BOS token is prepended (EOS if the tokenizer has no BOS; neither is an error); nothing is appended.
3. The sequence (BOS included) is truncated to ``max_length`` tokens (also capped by the judge's context).
4. Texts are batched with right padding; padding is masked out of attention and out of the loss.
5. Every real token after BOS is predicted from its prefix; NLL uses natural log.
6. ``token_ppl = exp(total NLL / total predicted tokens)`` over all texts;
   ``sample_ppl_mean = mean_i exp(mean NLL of text i)``.

Texts that are empty or whitespace-only (nothing to predict) are dropped and counted in ``num_dropped``.
The default judge is SmolLM2-135M (a stand-in: the papers use GPT-2 Large); always report which judge.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ldlm.storage.resources import resolve_model

__all__ = ["JudgeLM"]


class JudgeLM:
    """A frozen causal LM that scores texts; ``perplexity`` implements the protocol in the module doc."""

    def __init__(
        self,
        name: str = "smollm2-135m",
        device: str | torch.device = "cpu",
        batch_size: int = 16,
        max_length: int = 256,
    ):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2 (BOS plus one predicted token), got {max_length}")
        self.name = name
        self.device = torch.device(device)
        self.batch_size = batch_size
        path = resolve_model(name)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(self.device)
        self.model.eval()
        self.model.requires_grad_(False)
        ctx = getattr(self.model.config, "max_position_embeddings", None)
        self.max_length = min(max_length, ctx) if ctx else max_length

        tok = self.tokenizer
        start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        if start is None:
            raise ValueError(
                f"judge tokenizer {name!r} has neither a BOS nor an EOS token; cannot condition the first "
                "word of a text. Use a causal LM whose tokenizer defines one."
            )
        self.start_id = int(start)
        pad = tok.pad_token_id if tok.pad_token_id is not None else self.start_id
        self.pad_id = int(pad)

    def encode(self, text: str) -> list[int]:
        """Token ids of one text under the protocol: ``[BOS] + ids`` truncated; ``[]`` if nothing to score."""
        if not isinstance(text, str):
            raise TypeError(f"texts must be strings, got {type(text).__name__}")
        if not text.strip():
            return []
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if not ids:
            return []
        return [self.start_id, *ids[: self.max_length - 1]]

    @torch.inference_mode()
    def token_nll(self, texts: Sequence[str]) -> list[tuple[float, int] | None]:
        """Per text ``(summed NLL in nats, predicted tokens)``; ``None`` for texts with nothing to score."""
        encoded = [self.encode(t) for t in texts]
        out: list[tuple[float, int] | None] = [None] * len(encoded)
        order = sorted((i for i, e in enumerate(encoded) if e), key=lambda i: len(encoded[i]))
        for s in range(0, len(order), self.batch_size):
            idx = order[s : s + self.batch_size]
            width = max(len(encoded[i]) for i in idx)
            ids = torch.full((len(idx), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for r, i in enumerate(idx):
                ids[r, : len(encoded[i])] = torch.tensor(encoded[i])
                mask[r, : len(encoded[i])] = 1
            ids, mask = ids.to(self.device), mask.to(self.device)
            logits = self.model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            target, tmask = ids[:, 1:], mask[:, 1:].float()
            # logsumexp - gather is closer to a float64 reference than F.cross_entropy on (B, V, L) logits
            nll = logits.logsumexp(-1) - logits.gather(-1, target[..., None])[..., 0]
            nll = torch.where(tmask.bool(), nll, 0.0)  # not a product: NaN * 0 would leak from padding
            sums, counts = nll.sum(1).cpu().tolist(), tmask.sum(1).long().cpu().tolist()
            for r, i in enumerate(idx):
                out[i] = (float(sums[r]), int(counts[r]))
        return out

    def perplexity(self, texts: Sequence[str]) -> dict:
        """Token-level and mean per-sample perplexity of ``texts`` under the judge (see module doc)."""
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings, not a single string")
        texts = list(texts)
        if not texts:
            raise ValueError("perplexity needs at least one text, got an empty list")
        scored = [r for r in self.token_nll(texts) if r is not None]
        if not scored:
            raise ValueError(f"all {len(texts)} texts are empty or whitespace-only: nothing to score")
        total_nll = sum(s for s, _ in scored)
        total_tok = sum(n for _, n in scored)
        sample_ppls = [math.exp(s / n) for s, n in scored]
        result = {
            "token_ppl": math.exp(total_nll / total_tok),
            "sample_ppl_mean": sum(sample_ppls) / len(sample_ppls),
            "num_texts": len(scored),
            "num_tokens": total_tok,
            "num_dropped": len(texts) - len(scored),
            "judge": self.name,
        }
        for key in ("token_ppl", "sample_ppl_mean"):
            if not math.isfinite(result[key]):
                raise FloatingPointError(
                    f"judge {self.name!r} produced a non-finite {key} ({result[key]}); "
                    "check the model dtype/device and the input texts"
                )
        return result
