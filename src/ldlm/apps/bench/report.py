"""The figure and the Markdown tables of ``ldlm bench`` (``results/bench.png``, ``results/bench.md``)."""

from __future__ import annotations

from pathlib import Path

from ldlm.reporting.figures import _pyplot, save_figure


def plot_bench(result: dict, out: Path) -> Path:
    """Four panels: sampling time vs L, per-step cost, % of the matmul peak vs batch, training samples/s."""
    plt = _pyplot()
    c = result["config"]
    fig, axes = plt.subplots(1, 4, figsize=(20, 4))
    rows = result["sampling"]["rows"]
    lengths = [r["length"] for r in rows]
    axes[0].plot(lengths, [r["latent_s"] for r in rows], "o-", label=f"latent (N={c['num_latents']}, T={c['steps']})")
    axes[0].plot(lengths, [r["ar_s"] for r in rows], "s-", label="GPT-2, KV cache")
    axes[0].set(xlabel="sequence length L", ylabel=f"seconds per batch of {c['batch']}", title="sampling")
    axes[0].legend()
    steps = result["step_cost"]
    labels = [f"latent N={r['num_latents']}" for r in steps] + [f"token L={c['step_length']} + vocab"]
    axes[1].bar(labels, [r["latent_step_s"] * 1e3 for r in steps] + [steps[0]["token_step_s"] * 1e3])
    axes[1].set(ylabel="ms per denoising step", title="one denoising step")
    flops = result["denoiser_flops"]
    axes[2].plot([r["batch"] for r in flops], [100 * r["fraction_of_peak"] for r in flops], "o-")
    axes[2].set(xlabel="batch size", ylabel="% of fp32 matmul peak", xscale="log")
    axes[2].set_title(f"denoiser forward (peak {result['matmul_peak_gflops']:.0f} GFLOP/s)")
    train = result["training"]["rows"]
    axes[3].barh([r["name"] for r in train], [r["samples_per_s"] for r in train])
    axes[3].set(xlabel="training samples/s", title="training throughput")
    for ax in (axes[0], axes[2]):
        ax.grid(alpha=0.3)
    return save_figure(fig, out, dpi=100)


def _gib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def training_table(result: dict) -> list[str]:
    """Markdown rows: one per measured training stage."""
    lines = [
        "| recipe stage | preset | feature cache | batch | samples/s | s/step | peak RSS (GiB) | RSS before (GiB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["training"]["rows"]:
        cache = {True: "on", False: "off", None: "-"}[r["feature_cache"]]
        lines.append(
            f"| {r['recipe']} {r['stage']} | {r['preset']} | {cache} | {r['batch_size']} | {r['samples_per_s']:.1f} "
            f"| {r['step_seconds']:.3f} | {_gib(r['peak_rss_gib'])} | {_gib(r['rss_before_gib'])} |"
        )
    return lines


def quality_speed_table(result: dict) -> list[str]:
    """Markdown rows of ``latent_over_ar_time``: latent / AR seconds per (L, B) at the quality setting."""
    q = result.get("latent_over_ar_time")
    if q is None:
        return []
    lines = [
        f"Speed at equal quality: latent model with {q['sampler']} at {q['steps']} calls vs the GPT-2 twin (KV cache), "
        f"{q['torch_threads']} torch thread(s), median of {q['repeats']}.",
        "",
        "| L | batch | latent (s) | AR (s) | latent / AR |",
        "|---|---|---|---|---|",
        *(
            f"| {r['length']} | {r['batch']} | {r['latent_s']:.3g} | {r['ar_s']:.3g} | {r['ratio']:.3g} |"
            for r in q["rows"]
        ),
    ]
    trained = result.get("trained_models")
    if trained:
        lines += [
            "",
            f"Trained models ({trained['latent_run']} at L = {trained['latent_length']} vs {trained['ar_run']} at "
            f"L = {trained['ar_length']}, `generate` to texts):",
            "",
            "| batch | latent (s) | AR (s) | latent / AR |",
            "|---|---|---|---|",
            *(f"| {r['batch']} | {r['latent_s']:.3g} | {r['ar_s']:.3g} | {r['ratio']:.3g} |" for r in trained["rows"]),
        ]
    return [*lines, ""]


def bench_markdown(result: dict) -> str:
    """The README's Performance tables from one ``ldlm bench`` result."""
    c, m = result["config"], result["machine"]
    lines = [
        f"# ldlm bench ({'smoke' if c['smoke'] else 'full'} run, {result['total_seconds']:.0f} s)",
        "",
        f"{m['cpu_model']}, torch threads: {m['torch_threads']}, torch {m['torch']}. Batch {c['batch']}, "
        f"N = {c['num_latents']} latents, T = {c['steps']} steps, vocabulary {c['vocab']}.",
        "",
        "| L | latent sampling (s) | GPT-2 generate (s) |",
        "|---|---|---|",
        *(f"| {r['length']} | {r['latent_s']:.3g} | {r['ar_s']:.3g} |" for r in result["sampling"]["rows"]),
        "",
        *quality_speed_table(result),
    ]
    keys = [k for k in result if k.endswith("_over_L" + str(c["lengths"][0]))]
    keys += ["step_cost_ratio_token_over_latent", "denoiser_fraction_of_peak", "matmul_peak_gflops"]
    keys += ["quickstart_peak_rss_gib", "quickstart_shaped_training_peak_rss_gib", "bench_peak_rss_gib"]
    lines += ["| figure | value |", "|---|---|"]
    lines += [f"| `{k}` | {'n/a' if result[k] is None else f'{result[k]:.3g}'} |" for k in keys]
    lines += ["", *training_table(result), ""]
    speedup = result["training"]["feature_cache_speedup"]
    lines.append("Feature-cache speed-up per step: " + ", ".join(f"{k} {v:.2f}x" for k, v in speedup.items()) + ".")
    lines += ["", *(f"- {k}: {v}" for k, v in result["notes"].items()), ""]
    return "\n".join(lines)
