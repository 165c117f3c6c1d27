"""Tokenising texts into fixed-length padded rows (COSMOS) or packed chunks (MDLM protocol).

Rows are always right-padded, so real tokens come first and ``attention_mask`` is a prefix of ones. Every
padded row ends in a real end token (BERT's [SEP]; EOS appended for GPT-2/Llama tokenizers, which add none), so
a decoder trained on the rows learns where a text ends.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = [
    "TokenizedTexts",
    "appended_end_token",
    "decode_text",
    "pack_texts",
    "packed_tokens",
    "text_separator",
    "tokenize_texts",
]

_BATCH = 4096  # texts per tokenizer call (bounds peak memory on large corpora)


@dataclass
class TokenizedTexts:
    """Padded token ids ``(n, L)``, their attention mask ``(n, L)`` and how many texts were truncated."""

    input_ids: torch.Tensor  # (n, L) int64
    attention_mask: torch.Tensor  # (n, L) int64, 1 = real token
    num_truncated: int

    def __len__(self) -> int:
        return self.input_ids.shape[0]


def _pad_id(tokenizer) -> int:
    for tok_id in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if tok_id is not None:
            return int(tok_id)
    return 0  # masked out anyway


def appended_end_token(tokenizer) -> int | None:
    """The EOS id that padded rows get appended when the tokenizer ends a text with no end token of its own
    (GPT-2, Llama: else the end of a text is never a trained position); ``None`` when it adds one ([SEP])."""
    ends = {tokenizer.sep_token_id, tokenizer.eos_token_id} - {None}
    probe = tokenizer("a", verbose=False)["input_ids"]
    if not ends or (probe and probe[-1] in ends):
        return None
    return text_separator(tokenizer)


def tokenize_texts(tokenizer, texts: Sequence[str], max_length: int) -> TokenizedTexts:
    """Tokenise with the tokenizer's special tokens (+ EOS, see :func:`appended_end_token`), truncate to and
    right-pad to ``max_length``.

    Truncation is counted and reported in one warning rather than one per text.
    """
    if len(texts) == 0:
        raise ValueError("tokenize_texts got no texts")
    end = appended_end_token(tokenizer)
    num_special = tokenizer.num_special_tokens_to_add(pair=False) + (end is not None)
    if max_length < num_special + 1:
        raise ValueError(f"max_length={max_length} leaves no room for text next to {num_special} special tokens")
    limit = max_length - (end is not None)  # the tokenizer's own rows; the appended EOS takes the last slot
    rows: list[list[int]] = []
    truncated: list[int] = []
    for start in range(0, len(texts), _BATCH):
        chunk = list(texts[start : start + _BATCH])
        # one spare token: a row that fills it was longer than the limit
        ids = tokenizer(chunk, truncation=True, max_length=limit + 1, verbose=False)["input_ids"]
        long = [i for i, row in enumerate(ids) if len(row) > limit]
        if long:  # re-tokenise those at the limit so special tokens ([SEP], ...) stay in place
            redo = tokenizer([chunk[i] for i in long], truncation=True, max_length=limit, verbose=False)
            redo = redo["input_ids"]
            for i, row in zip(long, redo, strict=True):
                ids[i] = row
            truncated.extend(start + i for i in long)
        rows.extend(ids if end is None else [[*row, end] for row in ids])
    input_ids = torch.full((len(rows), max_length), _pad_id(tokenizer), dtype=torch.long)
    attention_mask = torch.zeros((len(rows), max_length), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        attention_mask[i, : len(row)] = 1
    if truncated:
        warnings.warn(
            f"{len(truncated)} of {len(rows)} texts ({100 * len(truncated) / len(rows):.1f}%) were longer "
            f"than max_length={max_length} tokens and were truncated",
            stacklevel=2,
        )
    return TokenizedTexts(input_ids, attention_mask, len(truncated))


def decode_text(tokenizer, ids: Sequence[int]) -> str:
    """Token ids -> text without specials; WordPiece's " ," -> "," space cleanup only where it is meant to run.

    The cleanup exists for WordPiece (BERT) detokenisation; on byte-level BPE (GPT-2, SmolLM2) it would strip
    real spaces before punctuation, so transformers ignores it there with a warning. We ask for it only on
    WordPiece tokenizers.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    wordpiece = backend is not None and type(backend.model).__name__ == "WordPiece"
    return tokenizer.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=wordpiece)


def text_separator(tokenizer) -> int:
    """The id that ends each text in a packed stream: EOS, or SEP for BERT-style tokenizers."""
    sep = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    if sep is None:
        raise ValueError(f"{type(tokenizer).__name__} has neither an EOS nor a SEP token to separate texts")
    return int(sep)


def pack_texts(tokenizer, texts: Sequence[str], chunk_length: int) -> torch.Tensor:
    """Concatenate texts (no special tokens, each followed by EOS, or SEP for BERT-style tokenizers) and cut
    the stream into ``(n_chunks, chunk_length)`` rows, dropping the last partial chunk (MDLM protocol)."""
    if len(texts) == 0:
        raise ValueError("pack_texts got no texts")
    if chunk_length < 1:
        raise ValueError(f"chunk_length must be positive, got {chunk_length}")
    sep = text_separator(tokenizer)
    stream: list[int] = []
    for start in range(0, len(texts), _BATCH):
        chunk = list(texts[start : start + _BATCH])
        for row in tokenizer(chunk, add_special_tokens=False, verbose=False)["input_ids"]:
            stream.extend(row)
            stream.append(sep)
    n_chunks = len(stream) // chunk_length
    if n_chunks == 0:
        raise ValueError(
            f"{len(texts)} texts give {len(stream)} tokens, fewer than one chunk of {chunk_length}: "
            "use more texts or a shorter chunk_length"
        )
    return torch.tensor(stream[: n_chunks * chunk_length], dtype=torch.long).view(n_chunks, chunk_length)


def packed_tokens(tokenizer, texts: Sequence[str], chunk_length: int) -> TokenizedTexts:
    """:func:`pack_texts` as rows with an all-ones attention mask (n_chunks, chunk_length): nothing is padded."""
    ids = pack_texts(tokenizer, texts, chunk_length)
    return TokenizedTexts(ids, torch.ones_like(ids), 0)
