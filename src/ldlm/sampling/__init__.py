"""Sampling: the ODE/SDE samplers over the denoiser (``samplers``: Euler, Euler-Maruyama, DDIM, DDPM, DPM-Solver++)
and minimum-Bayes-risk selection of seq2seq candidates (``mbr``). End to end: ``LatentDiffusionLM.generate``."""
