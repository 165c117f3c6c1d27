"""The training objectives of both papers, apart from the recipes that order them.

- :mod:`~ldlm.objectives.losses`: token cross-entropy L_w, masked MSE L_h, KL (shared terms)
- :mod:`~ldlm.objectives.augment`: COSMOS's activation perturbations and latent dropout, LDLM's decoder-input noise
- :mod:`~ldlm.objectives.warmup`: LDLM's diffusion-to-encoder warmup gamma(s)
- :mod:`~ldlm.objectives.head`: token-head initialisation / pre-training on the true h
- :mod:`~ldlm.objectives.autoencoder`: COSMOS stage 1 (``AutoencoderTask``), reconstruction accuracy
- :mod:`~ldlm.objectives.diffusion`: latent diffusion (``DiffusionTask``), latent statistics, validation loss
- :mod:`~ldlm.objectives.joint`: LDLM's joint ``L_diff + lambda_h L_h + L_w`` (``JointTask``)
- :mod:`~ldlm.objectives.decoder`: token-decoder post-training (``DecoderTask``)

A task is an ``nn.Module`` whose ``forward(batch, step)`` returns ``(loss, metrics)``: what
:class:`~ldlm.training.train.Trainer` trains.
"""
