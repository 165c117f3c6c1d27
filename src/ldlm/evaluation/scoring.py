"""A judge that scores Gen. PPL and MAUVE features in one forward pass per text and memoises both.

The judge LM dominates the cost of an evaluation on CPU; reusing one pass for both figures, and scoring a
real reference text only once however many seeds draw it, roughly halves it. Protocols are unchanged:
token ids come from :meth:`JudgeLM.encode`, NLL aggregation from the inherited :meth:`JudgeLM.perplexity`,
features from the same final hidden states that :func:`~ldlm.evaluation.mauve.judge_features` pools.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ldlm.evaluation.judge import JudgeLM
from ldlm.evaluation.mauve import POOLINGS, pad_batch, pool_hidden

__all__ = ["ScoringJudge"]


class ScoringJudge(JudgeLM):
    """:class:`JudgeLM` whose per-text NLL and MAUVE feature come from one shared, memoised forward pass.

    MAUVE truncation equals the judge's ``max_length``; an empty text gets a feature from its start token
    alone (it has no NLL: ``token_nll`` gives None, as in the parent).
    """

    def __init__(self, name: str = "smollm2-135m", *, pooling: str = "last", **kwargs):
        super().__init__(name, **kwargs)
        if pooling not in POOLINGS:
            raise ValueError(f"pooling={pooling!r} is unknown: use {' | '.join(POOLINGS)}")
        self.pooling = pooling
        self._nll: dict[str, tuple[float, int] | None] = {}
        self._features: dict[str, np.ndarray] = {}

    def token_nll(self, texts: Sequence[str]) -> list[tuple[float, int] | None]:
        """Per text ``(summed NLL in nats, predicted tokens)`` or None, as :meth:`JudgeLM.token_nll` (memoised)."""
        self._score(texts)
        return [self._nll[t] for t in texts]

    def features(self, texts: Sequence[str]) -> np.ndarray:
        """MAUVE features (n, hidden) float32 of ``texts`` (memoised)."""
        if not texts:
            raise ValueError("no texts to featurise")
        self._score(texts)
        return np.stack([self._features[t] for t in texts])

    @torch.inference_mode()
    def _score(self, texts: Sequence[str]) -> None:
        todo = [t for t in dict.fromkeys(texts) if t not in self._features]
        scored = {t: self.encode(t) for t in todo}  # [] = nothing to score; encode also type-checks
        encoded = {t: ids or [self.start_id] for t, ids in scored.items()}
        todo.sort(key=lambda t: len(encoded[t]))
        for s in range(0, len(todo), self.batch_size):
            batch = todo[s : s + self.batch_size]
            ids, mask, lengths = pad_batch([encoded[t] for t in batch], self.pad_id)
            out = self.model(
                input_ids=ids.to(self.device), attention_mask=mask.to(self.device), output_hidden_states=True
            )
            feats = pool_hidden(out.hidden_states[-1], mask, lengths, self.pooling)  # (B, H)
            if not np.isfinite(feats).all():
                raise FloatingPointError(f"judge {self.name!r} produced non-finite MAUVE features")
            logits = out.logits[:, :-1].float()
            target, tmask = ids[:, 1:].to(self.device), mask[:, 1:].to(self.device).bool()
            nll = logits.logsumexp(-1) - logits.gather(-1, target[..., None])[..., 0]  # (B, L-1)
            sums = torch.where(tmask, nll, 0.0).sum(1).cpu().tolist()
            for r, t in enumerate(batch):
                self._features[t] = feats[r]
                self._nll[t] = (float(sums[r]), int(lengths[r]) - 1) if scored[t] else None
