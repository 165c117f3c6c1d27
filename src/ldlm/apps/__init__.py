"""Applications built on the library, each behind an ``ldlm`` verb (:mod:`ldlm.cli`): the CPU quickstart
(``quickstart``), paper ablation tables (``ablation``) and speed benchmarks (``bench``)."""
