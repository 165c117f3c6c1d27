"""Deprecated module: token-decoder post-training (LDLM App. B.2) is the objective
:class:`ldlm.objectives.decoder.DecoderTask` trained by the stage :func:`ldlm.recipes.stages.train_token_decoder`;
``token_loss`` is :func:`ldlm.objectives.losses.token_loss` (which takes the ``autoencoder`` section)."""

from __future__ import annotations

import warnings

from ldlm._moved import moved_names
from ldlm.objectives import losses


def token_loss(ae, h_hat, ids, mask, cfg, step, generator):
    """Deprecated: ``ldlm.objectives.losses.token_loss(ae, h_hat, ids, mask, cfg.autoencoder, step, generator)``."""
    warnings.warn(
        "ldlm.recipes.decoder.token_loss(..., cfg, ...) moved to ldlm.objectives.losses.token_loss(..., "
        "cfg.autoencoder, ...)",
        DeprecationWarning,
        stacklevel=2,
    )
    return losses.token_loss(ae, h_hat, ids, mask, cfg.autoencoder, step, generator)


__getattr__ = moved_names(
    __name__, {"DecoderTask": "ldlm.objectives.decoder", "train_token_decoder": "ldlm.recipes.stages"}
)
