"""The texts of one run, as ``data:`` defines them: the training texts, the held-out split and the autoencoder's
extra texts; and the choice of the texts that fill the whole window (``data.diffusion_full_window``).

Every recipe that trains on plain texts reads them here (COSMOS, LDLM, the AR baseline), and so do ``ldlm evaluate``
(Mem against the training texts, the held-out reference) and the ablation runner.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings

from ldlm.config import DataConfig
from ldlm.data.registry import DatasetError, load_texts, split_texts
from ldlm.data.tokenize import tokenize_texts

log = logging.getLogger(__name__)


@dataclasses.dataclass
class RunTexts:
    """Texts of one run: diffusion trains on ``train``; the autoencoder on ``train + extra``; ``valid`` is
    held out from both."""

    train: list[str]
    valid: list[str]
    extra: list[str]

    @property
    def autoencoder_texts(self) -> list[str]:
        return self.train + self.extra


def load_run_texts(dc: DataConfig) -> RunTexts:
    """``data.dataset`` split by ``data.seed`` into train / held-out, plus ``data.train_extra`` (training texts of
    every stage) and ``data.autoencoder_extra`` (autoencoder only); held-out texts never train."""
    texts = load_texts(dc.dataset, max_texts=dc.max_texts, field=dc.text_field, seed=dc.seed)
    size = int(dc.validation_size) if dc.validation_size >= 1 else dc.validation_size
    train, valid = split_texts(texts, size, dc.seed)
    held_out = set(valid)
    for name in dc.train_extra:  # more training texts for both stages; the held-out split is unchanged
        more = load_texts(name, max_texts=dc.extra_max_texts, field=dc.text_field, seed=dc.seed)
        train += [t for t in more if t not in held_out]
    extra: list[str] = []
    for name in dc.autoencoder_extra:
        more = load_texts(name, max_texts=dc.extra_max_texts, field=dc.text_field, seed=dc.seed)
        extra += [t for t in more if t not in held_out]  # never train the autoencoder on held-out texts
    return RunTexts(train, valid, extra)


def require_training_texts(texts: RunTexts, dc: DataConfig) -> None:
    if not texts.train:
        raise DatasetError(f"dataset {dc.dataset!r} left no training texts after the validation split")


def full_window_texts(model, texts: list[str]) -> list[str]:
    """The texts whose tokenisation fills all ``model.max_length`` positions (no padding row after truncation)."""
    if not texts:
        return []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # truncation is expected here: a text longer than L fills the window
        lengths = tokenize_texts(model.encoder.tokenizer, texts, model.max_length).attention_mask.sum(1)
    return [t for t, n in zip(texts, lengths.tolist(), strict=True) if n == model.max_length]


def diffusion_texts(model, data: RunTexts, cfg) -> tuple[list[str], list[str]]:
    """(train, valid) texts of the diffusion stage (``cfg``: a RunConfig): all of them, or with
    ``data.diffusion_full_window`` the full ones."""
    if not cfg.data.diffusion_full_window:
        return data.train, data.valid
    train, valid = full_window_texts(model, data.train), full_window_texts(model, data.valid)
    if not train:
        raise DatasetError(
            f"data.diffusion_full_window=true kept none of {len(data.train)} training texts: none fills "
            f"encoder.max_length={model.max_length} tokens; lower encoder.max_length or set it to false"
        )
    log.info(
        "diffusion_full_window: %d of %d training texts fill all %d positions",
        len(train),
        len(data.train),
        model.max_length,
    )
    return train, valid
