"""Training infrastructure shared by every recipe: the loop (``train``: Accelerate, EMA, checkpoints, resume),
run-level stage bookkeeping (``runstate``), checkpoints on disk (``checkpoint``), process groups
(``distributed``), RNG state (``rng``), GPU fast paths (``accel``) and process memory (``memory``)."""
