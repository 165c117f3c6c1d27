"""Speed benchmarks (issue 6): latent sampling vs an autoregressive GPT-2, latent vs token-level diffusion step,
denoiser FLOP/s vs the measured fp32 matmul peak. Random weights throughout: speed only.

FLOPs of one denoiser forward (multiply-add = 2 FLOPs), batch B, positions n = B*N, width W, MLP width rW,
latent dim d, layers Ly: ``Ly * (2n(3W^2 + W^2 + 2rW^2) + 4nNW + 12BW^2) + 2n(2dW + Wd) + 4BW^2 + 4BW^2``,
i.e. per block qkv + out projection + MLP, attention scores and values, the adaLN-Zero projection; then the
stem (input/output projections), time MLP and final adaLN. Norms, activations and softmax are not counted.
The peak is the best fp32 GFLOP/s of square torch.matmul over ``peak_sizes`` (2 size^3 FLOPs each).
"""

from __future__ import annotations

import dataclasses
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ldlm.config import DiffusionConfig
from ldlm.diffusion import build_denoiser, build_schedule, sample_latents
from ldlm.io import atomic_write_json
from ldlm.perceiver import PerceiverResampler


@dataclasses.dataclass
class BenchConfig:
    """Sizes of one benchmark run (the defaults are the full CPU run; :meth:`smoke` shrinks them)."""

    lengths: tuple[int, ...] = (128, 512, 1024)
    batch: int = 8
    steps: int = 50
    num_latents: int = 16
    latent_dim: int = 256
    width: int = 256
    layers: int = 6
    heads: int = 4
    decoder_blocks: int = 2
    vocab: int = 30_000
    step_length: int = 512
    step_latents: tuple[int, ...] = (16, 128)
    flops_batches: tuple[int, ...] = (1, 8, 32, 64, 128)
    peak_sizes: tuple[int, ...] = (256, 512, 1024, 2048, 4096)
    warmup: int = 1
    repeats: int = 3
    smoke: bool = False

    @classmethod
    def smoke_config(cls) -> BenchConfig:
        return cls(
            lengths=(16, 32, 64), batch=2, steps=2, num_latents=4, latent_dim=16, width=32, layers=2, heads=2,
            decoder_blocks=1, vocab=500, step_length=32, step_latents=(4,), flops_batches=(1, 4), peak_sizes=(64, 256),
            warmup=1, repeats=1, smoke=True,
        )  # fmt: skip


def _time(fn: Callable[[], object], warmup: int, repeats: int) -> float:
    """Median wall time (s) of ``fn()`` over ``repeats`` runs after ``warmup`` runs, under inference mode."""
    with torch.inference_mode():
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def _params(*modules: nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


def _diffusion_cfg(c: BenchConfig) -> DiffusionConfig:
    return DiffusionConfig(denoiser="dit", layers=c.layers, width=c.width, heads=c.heads)


def denoiser_flops(c: BenchConfig, batch: int, positions: int, latent_dim: int, mlp_ratio: float = 4.0) -> float:
    """Analytic FLOPs of one DiT denoiser forward (formula in the module docstring)."""
    w, n = c.width, batch * positions
    block = 2 * n * (4 * w * w + 2 * mlp_ratio * w * w) + 4 * n * positions * w + 12 * batch * w * w
    return c.layers * block + 2 * n * 3 * latent_dim * w + 8 * batch * w * w


def matmul_gflops(size: int, warmup: int, repeats: int) -> float:
    """fp32 GFLOP/s of one ``size x size`` torch.matmul (2 size^3 FLOPs), median time."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    return 2 * size**3 / _time(lambda: a @ b, warmup, max(repeats, 3)) / 1e9


def _gpt2(c: BenchConfig, target_params: int) -> tuple[nn.Module, int]:
    """GPT-2 (random weights, tied head) of width ``c.width`` with the layer count closest to ``target_params``."""
    from transformers import GPT2Config, GPT2LMHeadModel

    def build(layers: int) -> nn.Module:
        cfg = GPT2Config(
            vocab_size=c.vocab, n_positions=max(c.lengths) + 1, n_embd=c.width, n_layer=layers, n_head=c.heads,
            bos_token_id=0, eos_token_id=None, pad_token_id=0,
        )  # fmt: skip
        return GPT2LMHeadModel(cfg).eval()

    base, one = _params(build(0)), _params(build(1))
    layers = max(1, round((target_params - base) / (one - base)))
    return build(layers), layers


def bench_sampling(c: BenchConfig) -> dict:
    """Wall time of one batch vs L: latent sampling (T steps + one decoder pass + vocab head) vs GPT-2 generate."""
    denoiser = build_denoiser(_diffusion_cfg(c), latent_dim=c.latent_dim, num_latents=c.num_latents).eval()
    decoder = PerceiverResampler(
        num_queries=max(c.lengths), max_inputs=c.num_latents, in_dim=c.latent_dim, out_dim=c.width,
        width=c.width, blocks=c.decoder_blocks, heads=c.heads,
    ).eval()  # fmt: skip
    head = nn.Linear(c.width, c.vocab)
    schedule = build_schedule("tan", 5.0, 0.999)
    latent_params = _params(denoiser, decoder, head)
    gpt2, gpt2_layers = _gpt2(c, latent_params)
    prompt = torch.zeros(c.batch, 1, dtype=torch.long)

    def latent(length: int) -> torch.Tensor:
        z = sample_latents(denoiser, schedule, (c.batch, c.num_latents, c.latent_dim), steps=c.steps)
        return head(decoder(z, num_outputs=length)).argmax(-1)

    def autoregressive(length: int) -> torch.Tensor:
        return gpt2.generate(
            prompt, attention_mask=torch.ones_like(prompt), do_sample=False, use_cache=True,
            min_new_tokens=length, max_new_tokens=length, pad_token_id=0, eos_token_id=None,
        )  # fmt: skip

    rows = [
        {
            "length": length,
            "latent_s": _time(lambda n=length: latent(n), c.warmup, c.repeats),
            "ar_s": _time(lambda n=length: autoregressive(n), c.warmup, c.repeats),
        }
        for length in c.lengths
    ]
    return {"latent_params": latent_params, "ar_params": _params(gpt2), "ar_layers": gpt2_layers, "rows": rows}


def bench_step_cost(c: BenchConfig) -> list[dict]:
    """One latent denoising step (N positions, no head) vs one token-level step (L positions + vocab head)."""
    cfg = _diffusion_cfg(c)
    token = build_denoiser(cfg, latent_dim=c.width, num_latents=c.step_length).eval()
    head = nn.Linear(c.width, c.vocab)
    x, t = torch.randn(c.batch, c.step_length, c.width), torch.full((c.batch,), 0.5)
    token_s = _time(lambda: head(token(x, t, x)), c.warmup, c.repeats)
    rows = []
    for n in c.step_latents:
        latent = build_denoiser(cfg, latent_dim=c.latent_dim, num_latents=n).eval()
        z = torch.randn(c.batch, n, c.latent_dim)
        latent_s = _time(lambda m=latent, z=z: m(z, t, z), c.warmup, c.repeats)
        rows.append({"num_latents": n, "latent_step_s": latent_s, "token_step_s": token_s, "ratio": token_s / latent_s})
    return rows


def bench_flops(c: BenchConfig, peak_gflops: float) -> list[dict]:
    """Achieved GFLOP/s of the denoiser forward per batch size, and its fraction of the matmul peak."""
    denoiser = build_denoiser(_diffusion_cfg(c), latent_dim=c.latent_dim, num_latents=c.num_latents).eval()
    rows = []
    for b in c.flops_batches:
        z, t = torch.randn(b, c.num_latents, c.latent_dim), torch.full((b,), 0.5)
        seconds = _time(lambda z=z, t=t: denoiser(z, t, z), c.warmup, c.repeats)
        gflops = denoiser_flops(c, b, c.num_latents, c.latent_dim) / seconds / 1e9
        rows.append({"batch": b, "seconds": seconds, "gflops": gflops, "fraction_of_peak": gflops / peak_gflops})
    return rows


def machine_info() -> dict:
    return {
        "cpu": platform.processor() or platform.machine(),
        "cpu_model": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def run_benchmarks(out: str | Path = "results/bench.json", *, smoke: bool = False) -> dict:
    """Run all three benchmarks in this process; write JSON (atomically) and a PNG beside it; return the JSON."""
    c = BenchConfig.smoke_config() if smoke else BenchConfig()
    torch.manual_seed(0)
    start = time.perf_counter()
    matmul = {str(size): matmul_gflops(size, c.warmup, c.repeats) for size in c.peak_sizes}
    peak = max(matmul.values())  # the best square fp32 matmul: cache effects make the largest not always the peak
    sampling = bench_sampling(c)
    steps = bench_step_cost(c)
    flops = bench_flops(c, peak)
    by_len = {r["length"]: r for r in sampling["rows"]}
    lo, mid = c.lengths[0], c.lengths[1]
    result = {
        "config": dataclasses.asdict(c),
        "machine": machine_info(),
        "matmul_peak_gflops": peak,
        "matmul_gflops_by_size": matmul,
        "sampling": sampling,
        f"sampling_time_ratio_L{mid}_over_L{lo}": by_len[mid]["latent_s"] / by_len[lo]["latent_s"],
        f"ar_time_ratio_L{mid}_over_L{lo}": by_len[mid]["ar_s"] / by_len[lo]["ar_s"],
        "step_cost": steps,
        "step_cost_ratio_token_over_latent": steps[-1]["ratio"],
        "denoiser_flops": flops,
        "denoiser_fraction_of_peak": flops[-1]["fraction_of_peak"],
        "bench_peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "total_seconds": time.perf_counter() - start,
    }
    out = Path(out)
    atomic_write_json(out, result)
    plot_bench(result, out.with_suffix(".png"))
    return result


def plot_bench(result: dict, out: Path) -> Path:
    """Three panels: sampling time vs L, per-step cost, fraction of the matmul peak vs batch size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = result["config"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    rows = result["sampling"]["rows"]
    lengths = [r["length"] for r in rows]
    axes[0].plot(lengths, [r["latent_s"] for r in rows], "o-", label=f"latent (N={c['num_latents']}, T={c['steps']})")
    axes[0].plot(lengths, [r["ar_s"] for r in rows], "s-", label="GPT-2, KV cache")
    axes[0].set(xlabel="sequence length L", ylabel=f"seconds per batch of {c['batch']}", title="sampling")
    steps = result["step_cost"]
    labels = [f"latent N={r['num_latents']}" for r in steps] + [f"token L={c['step_length']} + vocab"]
    axes[1].bar(labels, [r["latent_step_s"] * 1e3 for r in steps] + [steps[0]["token_step_s"] * 1e3])
    axes[1].set(ylabel="ms per denoising step", title="one denoising step")
    flops = result["denoiser_flops"]
    axes[2].plot([r["batch"] for r in flops], [100 * r["fraction_of_peak"] for r in flops], "o-")
    axes[2].set(xlabel="batch size", ylabel="% of fp32 matmul peak", xscale="log", title="denoiser forward")
    axes[2].set_title(f"denoiser forward (peak {result['matmul_peak_gflops']:.0f} GFLOP/s)")
    for ax in (axes[0], axes[2]):
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
