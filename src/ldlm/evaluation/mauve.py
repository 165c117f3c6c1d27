"""MAUVE (Pillutla et al. 2021) between generated and reference texts, on judge-LM features, via ``mauve-text``.

Protocol (recorded in every report as :meth:`MauveProtocol.to_dict`):

1. Each text is retokenised with the judge's tokenizer; one BOS (EOS if none) is prepended and the
   sequence is truncated to ``max_len`` tokens (BOS included). Empty texts keep only that start token:
   they are featurised, not dropped, and counted in ``num_empty`` (dropping them would flatter a model).
2. Feature = the judge's final hidden state (after its last norm) at the last token (``pooling="last"``,
   as ``mauve-text``'s own GPT-2 featuriser does; ``"mean"`` averages over tokens, which is blind to word
   order: shuffled news sentences scored 0.67 with it vs 0.17 with ``"last"``, 128 vs 250 texts).
3. ``mauve.compute_mauve`` on the two feature sets with a fixed k-means ``seed``, scaling factor 5 and
   ``num_buckets="auto"`` (= max(2, round(min(n_p, n_q) / 10))).

The reference set must hold at least as many texts as the sample set (a smaller one is an error).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ldlm.evaluation.judge import JudgeLM

__all__ = [
    "MauveProtocol",
    "check_sizes",
    "judge_features",
    "mauve_from_features",
    "mauve_texts",
    "pad_batch",
    "pool_hidden",
]

POOLINGS = ("last", "mean")


@dataclass(frozen=True)
class MauveProtocol:
    """Every knob that changes a MAUVE number; defaults are ``mauve-text``'s except the featuriser."""

    max_len: int = 256  # judge tokens per text, BOS included
    seed: int = 25  # k-means seed (mauve-text's default)
    pooling: str = "last"  # "last" | "mean" over the judge's final hidden states
    scaling_factor: float = 5.0
    num_buckets: int | str = "auto"
    kmeans_num_redo: int = 5
    kmeans_max_iter: int = 500

    def __post_init__(self) -> None:
        if self.max_len < 2:
            raise ValueError(f"mauve max_len must be >= 2 (BOS plus one token), got {self.max_len}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"mauve pooling={self.pooling!r} is unknown: use {' | '.join(POOLINGS)}")
        if self.num_buckets != "auto" and (not isinstance(self.num_buckets, int) or self.num_buckets < 2):
            raise ValueError(f"mauve num_buckets must be 'auto' or an integer >= 2, got {self.num_buckets!r}")

    def to_dict(self) -> dict:
        return {**asdict(self), "features": f"judge final hidden state, {self.pooling}-pooled"}


def _check_texts(texts: Sequence[str], what: str) -> list[str]:
    if isinstance(texts, str):
        raise TypeError(f"{what} must be a list of strings, not a single string")
    texts = list(texts)
    if not texts:
        raise ValueError(f"{what} is empty: MAUVE needs texts on both sides")
    if not all(isinstance(t, str) for t in texts):
        raise TypeError(f"{what} must contain only strings")
    return texts


def _token_ids(judge: JudgeLM, text: str, max_len: int) -> list[int]:
    """``[start] + judge token ids`` truncated to ``max_len``; just ``[start]`` for an empty text."""
    ids = judge.tokenizer(text, add_special_tokens=False)["input_ids"] if text.strip() else []
    return [judge.start_id, *ids[: max_len - 1]]


def pad_batch(seqs: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad token id lists -> ids (B, L), attention mask (B, L), lengths (B,)."""
    lengths = torch.tensor([len(s) for s in seqs])
    ids = torch.full((len(seqs), int(lengths.max())), pad_id, dtype=torch.long)
    for r, s in enumerate(seqs):
        ids[r, : len(s)] = torch.tensor(s)
    mask = (torch.arange(ids.shape[1])[None] < lengths[:, None]).long()
    return ids, mask, lengths


def pool_hidden(hidden: torch.Tensor, mask: torch.Tensor, lengths: torch.Tensor, pooling: str) -> np.ndarray:
    """Final hidden states (B, L, H) of right-padded rows -> features (B, H) float32, by ``pooling``."""
    hidden, mask, lengths = hidden.float().cpu(), mask.cpu(), lengths.cpu()
    if pooling == "mean":
        pooled = (hidden * mask[..., None]).sum(1) / lengths[:, None]
    else:
        pooled = hidden[torch.arange(len(lengths)), lengths - 1]
    return pooled.numpy()


@torch.inference_mode()
def judge_features(judge: JudgeLM, texts: Sequence[str], protocol: MauveProtocol = MauveProtocol()) -> np.ndarray:
    """Texts -> features ``(n, hidden)`` float32 from the judge's final hidden states (module doc, step 2)."""
    texts = _check_texts(texts, "texts")
    encoded = [_token_ids(judge, t, protocol.max_len) for t in texts]
    body = judge.model.base_model  # the transformer without the LM head: no (B, L, V) logits needed
    feats = np.zeros((len(texts), judge.model.config.hidden_size), dtype=np.float32)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    for s in range(0, len(order), judge.batch_size):
        idx = order[s : s + judge.batch_size]
        ids, mask, lengths = pad_batch([encoded[i] for i in idx], judge.pad_id)
        hidden = body(input_ids=ids.to(judge.device), attention_mask=mask.to(judge.device)).last_hidden_state
        feats[idx] = pool_hidden(hidden, mask, lengths, protocol.pooling)
    if not np.isfinite(feats).all():
        raise FloatingPointError(f"judge {judge.name!r} produced non-finite MAUVE features")
    return feats


def check_sizes(num_samples: int, num_reference: int) -> None:
    """Raise unless 2 <= num_samples <= num_reference (a smaller reference set is refused, not padded)."""
    if num_samples < 2:
        raise ValueError(f"MAUVE needs at least 2 samples, got {num_samples}")
    if num_reference < num_samples:
        raise ValueError(
            f"the MAUVE reference set ({num_reference} texts) is smaller than the sample set ({num_samples}): "
            "use fewer samples or more held-out reference texts"
        )


def mauve_from_features(p: np.ndarray, q: np.ndarray, protocol: MauveProtocol = MauveProtocol()) -> float:
    """MAUVE of sample features ``p: (n, H)`` against reference features ``q: (m, H)`` with m >= n >= 2."""
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # its INFO lines list CPU-feature fallbacks
    import mauve

    if p.ndim != 2 or q.ndim != 2 or p.shape[1] != q.shape[1]:
        raise ValueError(f"feature arrays must be (n, H) with equal H, got {p.shape} and {q.shape}")
    check_sizes(len(p), len(q))
    out = mauve.compute_mauve(
        p_features=p,
        q_features=q,
        num_buckets=protocol.num_buckets,
        kmeans_num_redo=protocol.kmeans_num_redo,
        kmeans_max_iter=protocol.kmeans_max_iter,
        mauve_scaling_factor=protocol.scaling_factor,
        seed=protocol.seed,
        verbose=False,
    )
    score = float(out.mauve)
    if not np.isfinite(score):
        raise FloatingPointError(f"mauve-text returned a non-finite score ({score})")
    return score


def mauve_texts(
    judge: JudgeLM,
    texts: Sequence[str],
    reference: Sequence[str] | np.ndarray,
    protocol: MauveProtocol = MauveProtocol(),
) -> dict:
    """MAUVE of ``texts`` against ``reference`` (texts, or their precomputed ``judge_features``)."""
    texts = _check_texts(texts, "texts")
    ref = reference if isinstance(reference, np.ndarray) else judge_features(judge, reference, protocol)
    check_sizes(len(texts), len(ref))  # before the costly featurisation of the samples
    score = mauve_from_features(judge_features(judge, texts, protocol), ref, protocol)
    return {
        "mauve": score,
        "num_texts": len(texts),
        "num_reference": len(ref),
        "num_empty": sum(not t.strip() for t in texts),
        "judge": judge.name,
        **protocol.to_dict(),
    }
