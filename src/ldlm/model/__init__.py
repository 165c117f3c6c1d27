"""The model's parts: frozen token encoder E_h (``encoders``), Perceiver resampler (``perceiver``) and
self-attention stacks (``transformer``), the text autoencoder E_z / D_h / D_w (``autoencoder``) and the seq2seq
source latents (``source_latents``). The denoiser and noise schedule are in :mod:`ldlm.diffusion`; the whole
system is :class:`ldlm.pipeline.LatentDiffusionLM`."""
