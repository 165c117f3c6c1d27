"""Speed benchmarks in one place: ``ldlm bench`` (``benchmarks``: sampling vs GPT-2, step cost, % of matmul peak;
``throughput``: training throughput and peak memory per recipe stage; ``report``: its PNG and Markdown tables) and
``ldlm gpu-check`` (``gpu_check``: the paper presets' step time and memory on one GPU)."""
