"""Speed benchmarks (issue 6): latent sampling vs an autoregressive GPT-2, latent vs token-level diffusion step,
denoiser FLOP/s vs the measured fp32 matmul peak (random weights: speed only), training throughput and peak
memory of each recipe (:mod:`ldlm.apps.bench.throughput`), and the quickstart's peak RSS read from its report.

FLOPs of one denoiser forward (multiply-add = 2 FLOPs), batch B, positions n = B*N, width W, MLP width rW,
latent dim d, layers Ly: ``Ly * (2n(3W^2 + W^2 + 2rW^2) + 4nNW + 12BW^2) + 2n(2dW + Wd) + 4BW^2 + 4BW^2``,
i.e. per block qkv + out projection + MLP, attention scores and values, the adaLN-Zero projection; then the
stem (input/output projections), time MLP and final adaLN. Norms, activations and softmax are not counted.
The peak is the best fp32 GFLOP/s of square torch.matmul over ``peak_sizes`` (2 size^3 FLOPs each).
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ldlm.apps.bench.report import bench_markdown, plot_bench
from ldlm.apps.bench.throughput import bench_training
from ldlm.config import DiffusionConfig
from ldlm.diffusion import build_denoiser, build_schedule, sample_latents
from ldlm.model.autoencoder import head_argmax
from ldlm.model.perceiver import PerceiverResampler
from ldlm.storage.io import atomic_write_json, atomic_write_text
from ldlm.training.accel import cuda_sync
from ldlm.training.memory import peak_rss_gib

STEPS_NOTE = (
    "the full run samples with T=200 steps because COSMOS samples with 200 uniform Euler steps (App. C.1), the "
    "setting of its Table 4 timing (512 samples, A100, bf16; COSMOS_N=128: 35.1 s at L=128, 36.6 s at L=512, N=128)"
)


@dataclasses.dataclass
class BenchConfig:
    """Sizes of one benchmark run (the defaults are the full CPU run; :meth:`smoke` shrinks them)."""

    lengths: tuple[int, ...] = (128, 512, 1024)
    batch: int = 8
    steps: int = 200  # COSMOS App. C.1: 200 Euler steps, the setting of its Table 4 timing
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
    train_presets: tuple[str, str] = ("quickstart", "ldlm_quick")  # (COSMOS, LDLM) shapes of the training rows
    train_warmup: int = 3
    train_steps: int = 20
    threads: int | None = None  # torch intra-op threads (None: torch's default, all cores)
    device: str = "cpu"  # sampling and step-cost rows (ldlm.apps.bench.gpu_check runs them on CUDA)
    bf16: bool = False  # bf16 autocast of the sampling and step-cost rows (COSMOS Table 4 timed in bf16)
    # speed at equal quality (issue 23): latent / AR wall time per (L, B) with the sampler that matches Euler at 200
    quality_sampler: str = "ddim"  # DDIM at 32 calls ~ Euler at 200 on both trained models (results/fewstep.json)
    quality_steps: int = 32
    quality_lengths: tuple[int, ...] = (128, 512, 1024)
    quality_batches: tuple[int, ...] = (8, 64)
    quality_repeats: int = 3  # median of this many runs per cell; one warm-up per batch, at the first length
    smoke: bool = False

    @classmethod
    def smoke_config(cls) -> BenchConfig:
        """Tiny sizes on one thread (tiny ops on a busy CPU crawl with more): seconds, for tests and CI."""
        return cls(
            lengths=(16, 32, 64), batch=2, steps=2, num_latents=4, latent_dim=16, width=32, layers=2, heads=2,
            decoder_blocks=1, vocab=500, step_length=32, step_latents=(4,), flops_batches=(1, 4), peak_sizes=(64, 256),
            warmup=1, repeats=1, train_presets=("tiny", "ldlm_tiny"), train_warmup=1, train_steps=2, threads=1,
            quality_lengths=(16, 32), quality_batches=(2, 4), quality_repeats=1, smoke=True,
        )  # fmt: skip


def _time(fn: Callable[[], object], warmup: int, repeats: int) -> float:
    """Median wall time (s) of ``fn()`` over ``repeats`` runs after ``warmup`` runs, under inference mode."""
    with torch.inference_mode():
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(repeats):
            cuda_sync()
            start = time.perf_counter()
            fn()
            cuda_sync()
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def _autocast(c: BenchConfig):
    """bf16 autocast on ``c.device`` when ``c.bf16``, else nothing."""
    return torch.autocast(torch.device(c.device).type, dtype=torch.bfloat16, enabled=c.bf16)


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


def _gpt2(c: BenchConfig, target_params: int, longest: int) -> tuple[nn.Module, int]:
    """GPT-2 (random weights, tied head) of width ``c.width`` with the layer count closest to ``target_params``."""
    from transformers import GPT2Config, GPT2LMHeadModel

    def build(layers: int) -> nn.Module:
        cfg = GPT2Config(
            vocab_size=c.vocab, n_positions=longest + 1, n_embd=c.width, n_layer=layers, n_head=c.heads,
            bos_token_id=0, eos_token_id=None, pad_token_id=0,
        )  # fmt: skip
        return GPT2LMHeadModel(cfg).eval()

    base, one = _params(build(0)), _params(build(1))
    layers = max(1, round((target_params - base) / (one - base)))
    return build(layers), layers


@dataclasses.dataclass
class SamplingModels:
    """The latent model (DiT denoiser, Perceiver decoder, vocabulary head) and its same-width GPT-2 twin."""

    c: BenchConfig
    denoiser: nn.Module
    decoder: nn.Module
    head: nn.Module
    schedule: object
    gpt2: nn.Module
    gpt2_layers: int

    @classmethod
    def build(cls, c: BenchConfig) -> SamplingModels:
        longest = max(c.lengths + c.quality_lengths)
        denoiser = build_denoiser(_diffusion_cfg(c), latent_dim=c.latent_dim, num_latents=c.num_latents).eval()
        decoder = PerceiverResampler(
            num_queries=longest, max_inputs=c.num_latents, in_dim=c.latent_dim, out_dim=c.width,
            width=c.width, blocks=c.decoder_blocks, heads=c.heads,
        ).eval()  # fmt: skip
        head = nn.Linear(c.width, c.vocab)
        gpt2, gpt2_layers = _gpt2(c, _params(denoiser, decoder, head), longest)
        for module in (denoiser, decoder, head, gpt2):
            module.to(c.device)
        return cls(c, denoiser, decoder, head, build_schedule("tan", 5.0, 0.999), gpt2, gpt2_layers)

    def latent(self, batch: int, length: int, *, steps: int, sampler: str = "euler") -> torch.Tensor:
        """The pipeline's path: ``steps`` denoiser calls, then one decode to ``length`` token ids."""
        c = self.c
        with _autocast(c):
            shape = (batch, c.num_latents, c.latent_dim)
            z = sample_latents(self.denoiser, self.schedule, shape, steps=steps, sampler=sampler, device=c.device)
            return head_argmax(self.head, self.decoder(z, num_outputs=length))

    def autoregressive(self, batch: int, length: int) -> torch.Tensor:
        """GPT-2 ``generate`` with KV cache: exactly ``length`` new tokens per row."""
        prompt = torch.zeros(batch, 1, dtype=torch.long, device=self.c.device)
        with _autocast(self.c):
            return self.gpt2.generate(
                prompt, attention_mask=torch.ones_like(prompt), do_sample=False, use_cache=True,
                min_new_tokens=length, max_new_tokens=length, pad_token_id=0, eos_token_id=None,
            )  # fmt: skip


def bench_sampling(c: BenchConfig, models: SamplingModels | None = None) -> dict:
    """Wall time of one batch vs L: latent sampling (T steps + one decoder pass + vocab head) vs GPT-2 generate."""
    m = models or SamplingModels.build(c)
    rows = [
        {
            "length": length,
            "latent_s": _time(lambda n=length: m.latent(c.batch, n, steps=c.steps), c.warmup, c.repeats),
            "ar_s": _time(lambda n=length: m.autoregressive(c.batch, n), c.warmup, c.repeats),
        }
        for length in c.lengths
    ]
    latent_params = _params(m.denoiser, m.decoder, m.head)
    return {"latent_params": latent_params, "ar_params": _params(m.gpt2), "ar_layers": m.gpt2_layers, "rows": rows}


def bench_quality_speed(c: BenchConfig, models: SamplingModels | None = None) -> dict:
    """Latent / AR wall time at equal quality: the latent model with ``quality_sampler`` at ``quality_steps`` calls
    vs the KV-cached GPT-2 twin, B texts of L tokens each, per (L, B). Keys ``latent_over_ar_time_L{L}`` hold
    ``{"batch_{B}": ratio}``; ``latent_over_ar_time`` the seconds behind them."""
    m = models or SamplingModels.build(c)
    rows = []
    for b in c.quality_batches:
        for i, length in enumerate(c.quality_lengths):
            warmup = c.warmup if i == 0 else 0  # one warm-up per batch size: the long AR cells cost minutes each
            latent_s = _time(
                lambda n=length, b=b: m.latent(b, n, steps=c.quality_steps, sampler=c.quality_sampler),
                warmup, c.quality_repeats,
            )  # fmt: skip
            ar_s = _time(lambda n=length, b=b: m.autoregressive(b, n), warmup, c.quality_repeats)
            rows.append({"length": length, "batch": b, "latent_s": latent_s, "ar_s": ar_s, "ratio": latent_s / ar_s})
    out = {
        f"latent_over_ar_time_L{n}": {f"batch_{r['batch']}": r["ratio"] for r in rows if r["length"] == n}
        for n in c.quality_lengths
    }
    out["latent_over_ar_time"] = {
        "sampler": c.quality_sampler, "steps": c.quality_steps, "repeats": c.quality_repeats,
        "torch_threads": torch.get_num_threads(), "latent_params": _params(m.denoiser, m.decoder, m.head),
        "ar_params": _params(m.gpt2), "ar_layers": m.gpt2_layers, "rows": rows,
    }  # fmt: skip
    return out


def bench_trained(c: BenchConfig, latent_run: str | Path, ar_run: str | Path) -> dict:
    """The same ratio for two trained models (``ldlm sample``'s path: ``generate`` to texts), at their own length."""
    from ldlm.pipeline import load_model

    latent, ar = load_model(latent_run, c.device), load_model(ar_run, c.device)
    rows = []
    for i, b in enumerate(c.quality_batches):
        warmup = c.warmup if i == 0 else 0
        gen = {"sampler": c.quality_sampler, "steps": c.quality_steps, "seed": 0, "batch_size": b}
        latent_s = _time(lambda b=b, gen=gen: latent.generate(b, **gen), warmup, c.quality_repeats)
        ar_s = _time(lambda b=b: ar.generate(b, seed=0, batch_size=b), warmup, c.quality_repeats)
        rows.append({"batch": b, "latent_s": latent_s, "ar_s": ar_s, "ratio": latent_s / ar_s})
    return {
        "latent_run": str(latent_run), "ar_run": str(ar_run),
        "latent_length": latent.cfg.encoder.max_length, "ar_length": ar.max_length,
        "latent_params": _params(latent), "ar_params": _params(ar),
        **{f"batch_{r['batch']}": r["ratio"] for r in rows}, "rows": rows,
    }  # fmt: skip


def bench_step_cost(c: BenchConfig) -> list[dict]:
    """One latent denoising step (N positions, no head) vs one token-level step (L positions + vocab head)."""
    cfg, dev = _diffusion_cfg(c), c.device
    token = build_denoiser(cfg, latent_dim=c.width, num_latents=c.step_length).eval().to(dev)
    head = nn.Linear(c.width, c.vocab).to(dev)
    x, t = torch.randn(c.batch, c.step_length, c.width, device=dev), torch.full((c.batch,), 0.5, device=dev)

    def token_step() -> torch.Tensor:
        with _autocast(c):
            return head(token(x, t, x))

    token_s = _time(token_step, c.warmup, c.repeats)
    rows = []
    for n in c.step_latents:
        latent = build_denoiser(cfg, latent_dim=c.latent_dim, num_latents=n).eval().to(dev)
        z = torch.randn(c.batch, n, c.latent_dim, device=dev)

        def latent_step(m: nn.Module = latent, z: torch.Tensor = z) -> torch.Tensor:
            with _autocast(c):
                return m(z, t, z)

        latent_s = _time(latent_step, c.warmup, c.repeats)
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


def quickstart_rss(report: Path) -> tuple[float | None, str]:
    """``peak_rss_gib`` of the quickstart report ``report`` and where it came from (or why there is none)."""
    if not report.is_file():
        return None, f"{report} not found: run `ldlm quickstart` (it records its peak RSS)"
    value = json.loads(report.read_text()).get("peak_rss_gib")
    if value is None:
        return None, f"{report} has no peak_rss_gib (written before quickstart recorded it): re-run `ldlm quickstart`"
    return value, f"{report}: peak RSS of the whole `ldlm quickstart` process (training, sampling, judging)"


def _measure(c: BenchConfig) -> dict:
    """Every benchmark of ``c`` in this process (training before sampling, so the training rows start lean)."""
    matmul = {str(size): matmul_gflops(size, c.warmup, c.repeats) for size in c.peak_sizes}
    peak = max(matmul.values())  # the best square fp32 matmul: cache effects make the largest not always the peak
    training = bench_training(*c.train_presets, warmup=c.train_warmup, steps=c.train_steps)
    models = SamplingModels.build(c)
    sampling = bench_sampling(c, models)
    quality = bench_quality_speed(c, models)
    steps = bench_step_cost(c)
    flops = bench_flops(c, peak)
    by_len = {r["length"]: r for r in sampling["rows"]}
    lo, mid = c.lengths[0], c.lengths[1]
    shaped = [r["peak_rss_gib"] for r in training["rows"] if r["preset"] == c.train_presets[0]]
    return {
        "config": dataclasses.asdict(c),
        "machine": machine_info(),
        "matmul_peak_gflops": peak,
        "matmul_gflops_by_size": matmul,
        "sampling": sampling,
        f"sampling_time_ratio_L{mid}_over_L{lo}": by_len[mid]["latent_s"] / by_len[lo]["latent_s"],
        f"ar_time_ratio_L{mid}_over_L{lo}": by_len[mid]["ar_s"] / by_len[lo]["ar_s"],
        **quality,
        "step_cost": steps,
        "step_cost_ratio_token_over_latent": steps[-1]["ratio"],
        "denoiser_flops": flops,
        "denoiser_fraction_of_peak": flops[-1]["fraction_of_peak"],
        "training": training,
        "quickstart_shaped_training_peak_rss_gib": max(shaped) if None not in shaped else None,
    }


NOTES = {
    "sampling": "latent: T denoiser calls under torch.inference_mode, then one Perceiver decoder pass and the "
    "vocabulary head's argmax (1024 positions at a time); AR: GPT-2 generate with KV cache, exactly L new tokens",
    "latent_over_ar_time": "speed at equal quality (issue 23): latent_over_ar_time_L{L}[batch_{B}] = latent "
    "seconds / AR seconds for B texts of L tokens, the latent model (same shape as the `sampling` rows: N latents "
    "whatever L) sampling with quality_sampler at quality_steps calls (ddim at 16 matches euler at 200 on "
    "cosmos_roc45k: judge PPL 836 vs 793, MAUVE 0.34 vs 0.30, results/roc45k_sampler_sweep.json), the AR twin "
    "GPT-2 generate with KV cache; median of quality_repeats runs, one warm-up per batch size",
    "training": "short real runs of each stage (ldlm.apps.bench.throughput): the presets' shapes and batch sizes, "
    "train_warmup + train_steps steps from the middle of the stage, samples/s over train_steps; peak_rss_gib is "
    "the process's peak RSS over that row's loop (reset before it), rss_before_gib what the process held then",
}


def _threads_note(c: BenchConfig) -> str:
    return (
        f"the `latent_over_ar_time` rows ran with torch.get_num_threads() = {torch.get_num_threads()} "
        f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}) while other jobs shared the CPU: "
        "absolute seconds are pessimistic and noisy, the ratios less so (both models ran under the same load)"
    )


def run_benchmarks(
    out: str | Path = "results/bench.json",
    *,
    smoke: bool = False,
    quickstart_report: str | Path | None = None,
    batch: int | None = None,
    quality_sampler: str | None = None,
    quality_steps: int | None = None,
    quality_only: bool = False,
    latent_run: str | Path | None = None,
    ar_run: str | Path | None = None,
    quality_lengths: tuple[int, ...] | None = None,
) -> dict:
    """Run every benchmark in this process; write JSON (atomically), a PNG and a Markdown table beside it.

    ``quickstart_report``: the ``ldlm quickstart`` JSON whose ``peak_rss_gib`` is copied (default: beside ``out``).
    ``batch``: texts per sampling batch and step-cost row (default: :class:`BenchConfig`'s, 8; 2 with ``smoke``).
    ``quality_sampler`` / ``quality_steps``: the latent side of ``latent_over_ar_time_L*`` (default ddim, 16);
    ``quality_lengths``: their L (default 128, 512, 1024).
    ``quality_only``: run only that section (and ``trained_models``) and merge its keys into ``out``'s existing
    JSON, leaving the other keys as they are. ``latent_run`` and ``ar_run`` (both or neither): trained models
    timed the same way at their own length, key ``trained_models``.
    """
    c = BenchConfig.smoke_config() if smoke else BenchConfig()
    if batch is not None:
        if batch < 1:
            raise ValueError(f"batch={batch} must be >= 1")
        c = dataclasses.replace(c, batch=batch)
    if quality_steps is not None and quality_steps < 1:
        raise ValueError(f"quality_steps={quality_steps} must be >= 1")
    if (latent_run is None) != (ar_run is None):
        raise ValueError("latent_run and ar_run go together: pass both or neither")
    if quality_lengths is not None and (not quality_lengths or min(quality_lengths) < 1):
        raise ValueError(f"quality_lengths={quality_lengths} must be positive lengths")
    c = dataclasses.replace(
        c,
        quality_sampler=quality_sampler or c.quality_sampler,
        quality_steps=quality_steps or c.quality_steps,
        quality_lengths=tuple(quality_lengths or c.quality_lengths),
    )
    out = Path(out)
    torch.manual_seed(0)
    start, threads = time.perf_counter(), torch.get_num_threads()
    if c.threads:
        torch.set_num_threads(c.threads)
    try:
        if quality_only:
            result = json.loads(out.read_text()) if out.is_file() else {"config": {}, "notes": {}}
            section = bench_quality_speed(c)
        else:
            result = _measure(c)
            section = {k: v for k, v in result.items() if k.startswith("latent_over_ar_time")}
        if latent_run is not None:
            section["trained_models"] = bench_trained(c, latent_run, ar_run)
        threads_note = _threads_note(c)
    finally:
        torch.set_num_threads(threads)
    quality_config = {k: v for k, v in dataclasses.asdict(c).items() if k.startswith("quality_")}
    if quality_only:
        for stale in [k for k in result if k.startswith("latent_over_ar_time_L")]:
            del result[stale]  # rows of an earlier setting must not sit beside this one's
        result.update(section)
        result["config"].update(quality_config)
        result["notes"].update(latent_over_ar_time=NOTES["latent_over_ar_time"], latent_over_ar_threads=threads_note)
        result["latent_over_ar_time"]["seconds"] = time.perf_counter() - start
        atomic_write_json(out, result)
        if "sampling" in result:  # a full result to merge into: its figure and tables, with the new rows
            plot_bench(result, out.with_suffix(".png"))
            atomic_write_text(out.with_suffix(".md"), bench_markdown(result))
        return result
    result.update(section)
    report = Path(quickstart_report) if quickstart_report else out.with_name("quickstart.json")
    rss, rss_note = quickstart_rss(report)
    result.update(
        quickstart_peak_rss_gib=rss,
        bench_peak_rss_gib=peak_rss_gib(children=False),
        total_seconds=time.perf_counter() - start,
        notes={
            "sampling_steps": f"T={c.steps}; {STEPS_NOTE}", **NOTES, "latent_over_ar_threads": threads_note,
            "quickstart_peak_rss_gib": rss_note,
        },
    )  # fmt: skip
    atomic_write_json(out, result)
    plot_bench(result, out.with_suffix(".png"))
    atomic_write_text(out.with_suffix(".md"), bench_markdown(result))
    return result
