"""``ldlm quickstart``: train a CPU-sized COSMOS on the offline news corpus, sample, judge, write figures.

Writes ``results/quickstart.json`` (wall time, peak RSS, sizes, held-out reconstruction accuracy, judge perplexity
of trained vs untrained samples, feature-cache speed-up, the samples) and a learning-curve PNG beside it.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path

import torch

from ldlm.config import load_config
from ldlm.pipeline import LatentDiffusionLM
from ldlm.storage.io import atomic_write_json
from ldlm.training.memory import peak_rss_gib


def measure_feature_cache_speedup(
    model: LatentDiffusionLM, texts: list[str], *, batch_size: int, steps: int = 6
) -> dict:
    """Median time of one autoencoder training step (forward + backward) with cached h vs running E_h."""
    from ldlm.data.sources import FeatureSource
    from ldlm.objectives.autoencoder import AutoencoderTask

    texts = texts[: batch_size * steps]
    task = AutoencoderTask(model, seed=0).train()
    timings = {}
    for cached in (True, False):
        source = FeatureSource(model, texts, cache=cached)
        times = []
        for i in range(steps):
            batch = source.batch(torch.arange(i * batch_size, (i + 1) * batch_size) % len(source))
            start = time.perf_counter()
            loss, _ = task(batch, step=10**6)  # augmentations at full strength, as late in training
            loss.backward()
            times.append(time.perf_counter() - start)
            task.zero_grad(set_to_none=True)
        timings["cached" if cached else "uncached"] = statistics.median(times[1:])
    return {
        "feature_cache_speedup": timings["uncached"] / timings["cached"],
        "step_seconds_cached": timings["cached"],
        "step_seconds_uncached": timings["uncached"],
        "speedup_batch_size": batch_size,
    }


def run_quickstart(
    config: str = "quickstart",
    overrides=(),
    out: Path = Path("results/quickstart.json"),
    progress: bool = True,
) -> dict:
    """Train ``config`` with the COSMOS recipe, then write the run report (see :func:`report_run`)."""
    from ldlm.recipes.cosmos import train_cosmos

    start = time.perf_counter()
    cfg = load_config(config, overrides)
    model, _ = train_cosmos(cfg, progress=progress)
    return report_run(model, out, config=config, started=start)


def report_run(
    model: LatentDiffusionLM,
    out: Path,
    *,
    config: str,
    started: float | None = None,
    num_samples: int | None = None,
) -> dict:
    """Judge samples of a trained run against its untrained twin, measure the feature-cache speed-up,
    plot the learning curves, print the samples and write ``out`` (JSON) atomically."""
    from ldlm.data.texts import load_run_texts
    from ldlm.evaluation.untrained import judge_against_untrained
    from ldlm.reporting.plots import plot_learning_curves

    cfg = model.cfg
    summary = json.loads((cfg.run_dir / "summary.json").read_text())
    speed, real = {}, None
    if cfg.recipe == "cosmos":  # the stage-1 step whose input the feature cache replaces
        data = load_run_texts(cfg.data)
        speed = measure_feature_cache_speedup(model, data.train, batch_size=cfg.autoencoder_train.batch_size)
        real = data.valid  # held out from both stages
    judged = judge_against_untrained(
        model, num_samples=num_samples or cfg.sample.num_samples, seed=cfg.sample.seed, reference_texts=real
    )
    curves = plot_learning_curves(cfg.run_dir, out.with_name(out.stem + "_curves.png"), title=f"ldlm {config}")
    result = {
        "config": config,
        "seq_len": cfg.encoder.max_length,
        "num_latents": cfg.autoencoder.num_latents,
        "encoder": cfg.encoder.name,
        "dataset": cfg.data.dataset,
        "autoencoder_extra": cfg.data.autoencoder_extra,
        "recipe": cfg.recipe,
        "heldout_token_accuracy": summary["heldout_token_accuracy"],
        **{  # stage timings differ by recipe (COSMOS: autoencoder + diffusion; LDLM: joint [+ decoder])
            k: summary[k]
            for k in (
                "train_texts",
                "valid_texts",
                "autoencoder_texts",
                "train_minutes",
                "autoencoder_minutes",
                "diffusion_minutes",
                "joint_minutes",
                "decoder_minutes",
            )
            if k in summary
        },
        **speed,
        **judged,
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}",
        "run_dir": str(cfg.run_dir),
        "curves_png": str(curves),
    }
    # wall time of the whole command when it trained here; otherwise the run's own training wall time
    wall = (time.perf_counter() - started) / 60 if started is not None else summary["train_minutes"]
    result = {"wall_minutes": wall, **result}
    if started is not None:  # this process trained, sampled and judged: its peak RSS is the whole command's
        result["peak_rss_gib"] = peak_rss_gib()
    atomic_write_json(out, result)
    print(f"\n{len(judged['samples'])} samples from {cfg.run_dir / 'model'}:")
    for i, text in enumerate(judged["samples"]):
        print(f"[{i}] {text}")
    print(
        f"\nheld-out token accuracy {result['heldout_token_accuracy']:.3f} | judge ({judged['judge']}) PPL "
        f"trained {judged['judge_ppl_trained']:.1f} vs untrained {judged['judge_ppl_untrained']:.1f} "
        f"(entropy {judged['trained_stats']['entropy']:.2f} vs {judged['untrained_stats']['entropy']:.2f})"
        + (
            f"; real held-out texts {judged['judge_ppl_real']:.1f} (entropy {judged['real_stats']['entropy']:.2f})"
            if "judge_ppl_real" in judged
            else ""
        )
        + (f" | feature cache speed-up {speed['feature_cache_speedup']:.1f}x" if speed else "")
        + (f" | peak RSS {result['peak_rss_gib']:.2f} GiB" if "peak_rss_gib" in result else "")
        + f"\nwrote {out}"
    )
    return result
