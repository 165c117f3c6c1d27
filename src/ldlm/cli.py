"""``ldlm`` command line: train | sample | quickstart | report | configs | evaluate | sweep | probe | bench | ablate |
gpu-check.

ldlm train CONFIG [key.sub=value ...] [--resume]   train a preset (configs/) or a YAML file, e.g.
                                          ldlm train quickstart autoencoder_train.steps=500
                                          (multi-GPU: torchrun --nproc_per_node N -m ldlm.cli train ...)
ldlm sample RUN_DIR [-n 16] [--steps 200] [--seed 0] [--out samples.txt]   RUN_DIR: a run/model dir or hub id owner/name
ldlm sample RUN_DIR --source-file F [--guidance-scale 1] [--candidates k]   seq2seq: one output per source line
ldlm quickstart [--out results/quickstart.json]
ldlm report RUN_DIR --out results/NAME.json  judge samples vs an untrained twin, plot learning curves
ldlm configs                              list the presets
ldlm evaluate RUN_DIR [-n 128] [--seeds 0,1,2] [--paper] [--checkpoint DIR]   judge PPL, MAUVE, Div, entropy, Mem
                                          for samples and real held-out texts -> results/NAME_report.{json,md,png}
                                          (--source reconstruction: autoencoder round trips of held-out texts)
ldlm sweep RUN_DIR [--steps-list 10,25,50,100,200] [--samplers euler,ddim,dpmpp_2m]   quality vs sampling steps
                                          (= model calls), one line per sampler -> JSON + PNG
ldlm curve RUN_DIR [RUN_DIR ...] [--minutes 15,30,60]   quality of kept checkpoints vs training minutes
ldlm compare NAME=REPORT.json ... --out F   rows of several evaluate reports + the real-text row, one JSON
ldlm probe {interpolation,robustness,mismatch,trajectory,loss-t,positions,frequency,all} RUN_DIR   latent-space probes
ldlm push RUN_DIR --repo owner/name [--private] [--revision BRANCH]   weights, config, card, results: one hub commit
ldlm bench [--smoke] [--batch 8] [--out results/bench.json]   sampling speed vs GPT-2, step cost, % of matmul peak
           [--quality-sampler ddim] [--quality-steps 32] [--quality-only] [--latent-run R --ar-run R]
                                          -> JSON + PNG; latent / AR time at equal quality (L = 128, 512, 1024)
ldlm gpu-check [--smoke] [--out results/gpu_check.json]   paper presets' training step time, peak memory, tokens/s
                                          (bf16, eager + torch.compile) and the sampling bench at batch 512 (CUDA)
ldlm ablate TABLE [--seeds 0,1,2] [--rows r1,r2] [--dry-run] [--report-only] [--generate-only]
                  [--out-dir results/ablations] [--runs-dir runs/ablations] [--markdown docs/results.md]
                                          a paper table (configs/ablations/TABLE.yaml or a YAML path): train and
                                          measure every row x seed (resumable: measured runs are skipped), then
                                          OUT_DIR/TABLE.json (mean ± std per row) and its Markdown in docs/results.md;
                                          --generate-only: train + sample + judge-free probes only (a GPU node
                                          without the judge), OUT_DIR/TABLE/generated/*.json; a later plain call
                                          scores those files instead of training
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path


class CLIError(Exception):
    """An error the user can fix; printed as one line without a traceback."""


def _cmd_train(args: argparse.Namespace) -> None:
    from ldlm.config import load_config
    from ldlm.recipes import RECIPES

    cfg = load_config(args.config, args.overrides)
    from ldlm.training import distributed

    print(f"training {cfg.name!r} ({cfg.recipe}) -> {cfg.run_dir}", file=sys.stderr)
    extra = {"resume": True} if args.resume else {}
    _, summary = RECIPES[cfg.recipe](cfg, progress=not args.quiet, **extra)
    if distributed.is_main():
        print(json.dumps(summary, indent=2))


def _cmd_sample(args: argparse.Namespace) -> None:
    from ldlm.pipeline import load_model
    from ldlm.storage.io import atomic_write_text

    # a LatentDiffusionLM, or the AR baseline (recipe: ar); a local directory or a hub id
    model = load_model(args.run_dir, device=args.device, revision=args.revision)
    _set_time_grid(model, args)
    if args.source_file:
        texts = _sample_sources(model, args)
    else:
        texts = model.generate(args.num_samples, steps=args.steps, sampler=args.sampler, seed=args.seed)
        for i, text in enumerate(texts):
            print(f"[{i}] {text}")
    if args.out:
        atomic_write_text(args.out, "\n".join(texts) + "\n")
        print(f"wrote {len(texts)} samples to {args.out}", file=sys.stderr)


def _set_time_grid(model, args: argparse.Namespace) -> None:
    """``--time-grid`` / ``--lower-order-final`` override the run's ``sample.time_grid`` / ``lower_order_final``."""
    import dataclasses

    changes = {"time_grid": args.time_grid} if args.time_grid else {}
    if args.lower_order_final:
        changes["lower_order_final"] = True
    if changes:
        model.cfg.sample = dataclasses.replace(model.cfg.sample, **changes)


def _add_time_grid_options(p: argparse.ArgumentParser) -> None:
    from ldlm.config import TIME_GRID_NAMES

    p.add_argument(
        "--time-grid",
        default=None,
        choices=TIME_GRID_NAMES,
        help="times of the denoiser calls (default: the run's sample.time_grid; auto: logsnr for dpmpp_2m, else "
        "uniform in t)",
    )
    p.add_argument(
        "--lower-order-final", action="store_true", help="dpmpp_2m: first-order last step (sample.lower_order_final)"
    )


def _sample_sources(model, args: argparse.Namespace) -> list[str]:
    """Seq2seq sampling: the sources of ``--source-file`` (.txt lines or .jsonl ``--source-field``), one output each."""
    from ldlm.data.registry import iter_file

    path = Path(args.source_file)
    if not path.is_file():
        raise CLIError(f"--source-file {args.source_file!r} does not exist")
    if not model.is_conditional:
        raise CLIError(f"{args.run_dir} holds an unconditional model (recipe={model.cfg.recipe}): drop --source-file")
    sources = list(iter_file(path, args.source_field))
    texts = model.generate(
        sources=sources,
        steps=args.steps,
        sampler=args.sampler,
        seed=args.seed,
        guidance_scale=args.guidance_scale,
        num_candidates=args.candidates,
    )
    for i, (source, text) in enumerate(zip(sources, texts, strict=True)):
        print(f"[{i}] {source}\n  -> {text}")
    return texts


def _cmd_quickstart(args: argparse.Namespace) -> None:
    from ldlm.apps.quickstart import run_quickstart

    run_quickstart(config=args.config, overrides=args.overrides, out=Path(args.out), progress=not args.quiet)


def _cmd_report(args: argparse.Namespace) -> None:
    from ldlm.apps.quickstart import report_run
    from ldlm.pipeline import LatentDiffusionLM

    model = LatentDiffusionLM.from_pretrained(args.run_dir, device=args.device)
    report_run(model, Path(args.out), config=model.cfg.name, num_samples=args.num_samples)


def _cmd_configs(args: argparse.Namespace) -> None:
    from ldlm.config import CONFIG_DIR, list_presets

    for name in list_presets():
        first = (CONFIG_DIR / f"{name}.yaml").read_text().splitlines()[0].lstrip("# ")
        print(f"{name:20s} {first}")


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def _name_list(text: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values:
        raise argparse.ArgumentTypeError("expected at least one name")
    return values


def _load_for_evaluation(args: argparse.Namespace):
    """The trained model of RUN_DIR with its training and held-out texts (as the run's config defines them)."""
    from ldlm.data.texts import load_run_texts
    from ldlm.pipeline import load_model

    # recipe: ar reads the same texts as COSMOS; RUN_DIR may be a hub id
    model = load_model(args.run_dir, device=args.device, revision=getattr(args, "revision", None))
    if getattr(args, "checkpoint", None):
        _load_training_checkpoint(model, Path(args.checkpoint))
    data = load_run_texts(model.cfg.data)
    return model, data.train, data.valid


def _load_training_checkpoint(model, path: Path) -> None:
    """Swap the EMA weights of a checkpoint of the run's last stage into ``model`` (a point on its learning curve)."""
    from ldlm.training.checkpoint import CheckpointError, load_ema_weights

    if not path.is_dir():
        raise CLIError(f"--checkpoint {str(path)!r} is not a directory: name one of RUN_DIR/<stage>/checkpoints/step_*")
    try:
        n = load_ema_weights(model, path)
    except CheckpointError as err:
        raise CLIError(f"--checkpoint: {err}") from None
    print(f"loaded {n} EMA tensors from {path}", file=sys.stderr)


def _suite_config(args: argparse.Namespace):
    from ldlm.evaluation.mauve import MauveProtocol
    from ldlm.evaluation.suite import PAPER_SCALE, SuiteConfig

    scale = PAPER_SCALE if getattr(args, "paper", False) else {}
    return SuiteConfig(
        num_samples=scale.get("num_samples", args.num_samples),
        seeds=tuple(scale.get("seeds", args.seeds)),
        steps=getattr(args, "steps", None),
        sampler=args.sampler,
        judge=args.judge,
        mauve=MauveProtocol(max_len=args.mauve_max_len, seed=args.mauve_seed, pooling=args.mauve_pooling),
        device=args.device,
        source=getattr(args, "source", "samples"),
    )


def _summary_line(summaries: dict) -> str:
    """``metric mean±std, ...`` for every ``{mean, std}`` entry of a report row."""
    cells = [
        f"{m} n/a" if v["mean"] is None else f"{m} {v['mean']:.4g}" + (f"±{v['std']:.2g}" if v["n"] > 1 else "")
        for m, v in summaries.items()
        if isinstance(v, dict) and "mean" in v
    ]
    return ", ".join(cells)


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from ldlm.evaluation.suite import evaluate_model
    from ldlm.reporting.writer import write_report

    if _run_recipe(args.run_dir, args.revision) == "seq2seq":
        if args.source != "samples":
            raise CLIError(f"--source {args.source} is for unconditional models; {args.run_dir} is a seq2seq run")
        return _cmd_evaluate_seq2seq(args)
    cfg = _suite_config(args)
    model, train, heldout = _load_for_evaluation(args)
    report = evaluate_model(model, train, heldout, cfg)
    suffix = "_reconstruction" if cfg.source == "reconstruction" else ""
    paths = write_report(report, args.out or f"results/{model.cfg.name}{suffix}_report.json")
    for row in ("model", "reference"):
        print(f"{row:9s} {_summary_line(report[row])}")
    if report["collapse"]["collapsed"]:
        print("COLLAPSED: " + report["warnings"][-1], file=sys.stderr)
    print(f"wrote {', '.join(str(p) for p in paths.values())}", file=sys.stderr)
    # the saved weights' samples were evaluated: their card carries the figures (round trips are not samples)
    if not args.checkpoint and cfg.source == "samples":
        from ldlm.evaluation.suite import METRICS
        from ldlm.reporting.writer import reproduce_command

        command = reproduce_command(report).removeprefix("HF_HUB_OFFLINE=1 ")
        command = command.replace(f"ldlm evaluate {report['run']}", "ldlm evaluate {model}", 1)
        figures = {m: report["model"][m] for m in METRICS if m in report["model"]}
        _update_card(args.run_dir, "unconditional", figures, command, str(paths["json"]))


def _update_card(run_dir: str, kind: str, figures: dict, command: str, report: str) -> None:
    """Record the figures in the model card of RUN_DIR when it is a local, writable model directory."""
    from ldlm.storage.model_card import record_evaluation

    path = Path(run_dir)
    model_dir = path / "model" if (path / "model" / "config.json").is_file() else path
    if not (model_dir / "config.json").is_file() or not os.access(model_dir, os.W_OK):
        return  # a hub id or a read-only directory: the card is updated where the model is pushed from
    card = record_evaluation(model_dir, kind, figures, command, report)
    print(f"updated the model card {card}", file=sys.stderr)


def _run_recipe(run_dir: str, revision: str | None = None) -> str | None:
    """The recipe named in a run's saved config, local or on the hub (None when unreadable: the loader reports why)."""
    from ldlm.pipeline import pretrained_dir

    try:
        return json.loads((pretrained_dir(run_dir, revision=revision) / "config.json").read_text()).get("recipe")
    except (OSError, ValueError):
        return None


def _cmd_evaluate_seq2seq(args: argparse.Namespace) -> None:
    """BLEU, ROUGE-1/2/L, BERTScore of a seq2seq run on its held-out pairs, with permuted-reference and copy-source
    baselines -> results/NAME_seq2seq.json (or --out)."""
    from ldlm.evaluation.seq2seq import evaluate_pairs
    from ldlm.pipeline import LatentDiffusionLM, pretrained_dir
    from ldlm.recipes.seq2seq import load_seq2seq_data
    from ldlm.storage.io import atomic_write_json
    from ldlm.storage.model_card import find_summary

    model = LatentDiffusionLM.from_pretrained(args.run_dir, device=args.device, revision=args.revision)
    _, heldout = load_seq2seq_data(model.cfg)
    result = evaluate_pairs(
        model,
        heldout,
        num_pairs=args.num_samples,
        steps=args.steps,
        sampler=args.sampler,
        seeds=args.seeds,
        guidance_scale=args.guidance_scale,
        num_candidates=args.candidates,
        bertscore_model=None if args.no_bertscore else args.bertscore_model,
    )
    summary = find_summary(pretrained_dir(args.run_dir, revision=args.revision))
    result = {
        "config": model.cfg.name,
        "dataset": model.cfg.data.dataset,
        "command": "ldlm " + " ".join(sys.argv[1:]),
        "train_minutes": summary.get("train_minutes"),
        "run_summary": summary,
        **result,
    }
    out = args.out or f"results/{model.cfg.name}_seq2seq.json"
    atomic_write_json(out, result)
    low, high = result["bleu_margin_ci95"]
    print(
        f"BLEU {result['bleu']:.2f} ± {result['bleu_std']:.2f} (permuted refs {result['bleu_permuted_refs']:.2f}, "
        f"copy source {result['bleu_copy_source']:.2f}; own - permuted {result['bleu_margin']:.2f}, 95% CI "
        f"[{low:.2f}, {high:.2f}]); ROUGE-L {result['rougeL']:.3f} (permuted {result['rougeL_permuted_refs']:.3f}); "
        f"{result['num_pairs']} held-out pairs x {len(result['seeds'])} seeds"
    )
    print(f"wrote {out}", file=sys.stderr)
    figures = {k: result[k] for k in ("bleu", "rouge1", "rouge2", "rougeL", "bertscore_f1") if k in result}
    command = " ".join("{model}" if word == args.run_dir else word for word in result["command"].split(" "))
    _update_card(args.run_dir, "seq2seq", figures, command, str(out))


def _cmd_push(args: argparse.Namespace) -> None:
    from ldlm.storage.hub import push_model

    url = push_model(args.run_dir, args.repo, private=args.private or None, revision=args.revision, token=args.token)
    print(f"pushed {args.run_dir} to {args.repo} in one commit: {url}")


def _cmd_sweep(args: argparse.Namespace) -> None:
    from ldlm.config import SAMPLER_NAMES
    from ldlm.evaluation.suite import build_scorer
    from ldlm.evaluation.sweep import steps_sweep, write_sweep

    samplers = args.samplers
    if samplers is not None:
        if args.sampler is not None:
            raise CLIError("give --sampler (one sampler) or --samplers (several), not both")
        unknown = [s for s in samplers if s not in SAMPLER_NAMES]
        if unknown or len(set(samplers)) != len(samplers):
            raise CLIError(f"--samplers {','.join(samplers)}: name each of {' | '.join(SAMPLER_NAMES)} at most once")
    cfg = _suite_config(args)
    model, train, heldout = _load_for_evaluation(args)
    _set_time_grid(model, args)
    scorer, _ = build_scorer(model, train, heldout, cfg)
    result = steps_sweep(model, scorer, args.steps_list, cfg, samplers=samplers)
    kind = "steps" if samplers is None else "sampler"
    paths = write_sweep(result, args.out or f"results/{model.cfg.name}_{kind}_sweep.json")
    for row in result["rows"]:
        name = f"{row['sampler']:>14s} " if "sampler" in row else ""
        print(f"{name}steps {row['steps']:5d}: {_summary_line(row)}, {row['seconds_per_sample']:.3f} s/sample")
    print(f"wrote {', '.join(str(p) for p in paths.values())}", file=sys.stderr)


def _cmd_curve(args: argparse.Namespace) -> None:
    """Quality of each run's kept checkpoints against training minutes, all scored against the first run's held-out
    texts (the runs must share data and tokenizer, as a COSMOS run and its AR baseline do)."""
    import random

    from ldlm.evaluation.curve import curve_points, learning_curve, with_collapse_flags, write_curve
    from ldlm.evaluation.suite import build_scorer, summarize
    from ldlm.evaluation.sweep import SWEEP_METRICS
    from ldlm.pipeline import load_model
    from ldlm.storage.io import read_json

    if args.replot is not None:
        saved = read_json(args.replot)
        if not isinstance(saved, dict) or "curves" not in saved:
            raise CLIError(f"--replot {args.replot}: not a curves JSON written by `ldlm curve`")
        paths = write_curve(saved["curves"], args.out or args.replot, saved.get("reference"))
        _print_trends(saved["curves"])
        print(f"wrote {', '.join(str(p) for p in paths.values())}", file=sys.stderr)
        return
    if args.run_dir is None:
        raise CLIError("ldlm curve: give RUN_DIR (or --replot CURVES.json)")
    cfg = _suite_config(args)
    run_dirs = [args.run_dir, *args.more_run_dirs]
    model, train, heldout = _load_for_evaluation(args)
    scorer, pool = build_scorer(model, train, heldout, cfg)
    real = [scorer.score(random.Random(seed).sample(pool, cfg.num_samples))[0] for seed in cfg.seeds]
    reference = {m: summarize([r[m] for r in real]) for m in SWEEP_METRICS}
    curves = {}
    for run_dir in run_dirs:
        try:
            points = curve_points(run_dir, args.minutes)
        except (FileNotFoundError, KeyError) as err:
            raise CLIError(f"{run_dir}: no learning curve to read ({err}); train it with save_every > 0") from None
        loader = lambda run_dir=run_dir: load_model(run_dir, device=args.device)
        curve = with_collapse_flags(learning_curve(loader, run_dir, points, scorer, cfg), reference)
        curves[curve["config"]] = curve
        for row in curve["rows"]:
            flag = " COLLAPSED" if row["collapse"]["collapsed"] else ""
            print(f"{curve['config']:>16s} {row['minutes']:7.1f} min (step {row['step']}): {_summary_line(row)}{flag}")
    paths = write_curve(curves, args.out or f"results/{model.cfg.name}_curve.json", reference)
    _print_trends(curves)
    print(f"wrote {', '.join(str(p) for p in paths.values())}", file=sys.stderr)


def _print_trends(curves: dict) -> None:
    for label, curve in curves.items():
        t = curve.get("trend", {}).get("judge_ppl")
        if t and t["exponent"] is not None:
            when = f"at {t['minutes_to_target']:.0f} min" if t["minutes_to_target"] else "never (not falling)"
            print(
                f"{label:>16s} judge PPL ~ minutes^{t['exponent']:.2f} ({t['fit']}): reaches {t['target']:.0f} {when}"
            )


def _cmd_compare(args: argparse.Namespace) -> None:
    """One table from several evaluate reports (NAME=REPORT.json each) -> JSON; refuses differing protocols."""
    from ldlm.evaluation.compare import write_comparison

    named = {}
    for item in args.reports:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise CLIError(f"{item!r}: write each report as NAME=PATH, e.g. cosmos=results/cosmos_report.json")
        if not Path(path).is_file():
            raise CLIError(f"{path!r} is not a file: run `ldlm evaluate RUN_DIR --out {path}` first")
        named[name] = path
    try:
        result = write_comparison(named, args.out)
    except ValueError as err:
        raise CLIError(str(err)) from None
    for name, row in result["rows"].items():
        minutes = f", {row['train_minutes']:.0f} train min" if row.get("train_minutes") else ""
        print(f"{name:>10s} {_summary_line(row)}{minutes}")
    print(f"wrote {args.out}", file=sys.stderr)


def _float_list(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _cmd_probe(args: argparse.Namespace) -> None:
    from ldlm.evaluation import probes
    from ldlm.evaluation.judge import JudgeLM

    if args.num_texts < 2:
        raise CLIError(f"-n/--num-texts must be >= 2, got {args.num_texts}")
    model, train, heldout = _load_for_evaluation(args)
    texts, n, seed = heldout, args.num_texts, args.seed
    if len(texts) < 2 * n:
        raise CLIError(f"the run holds out {len(texts)} texts; probes with -n {n} need {2 * n}: lower -n")
    runners = {
        "interpolation": lambda: probes.interpolation_probe(
            model, JudgeLM(args.judge, device=args.device), texts[:n], texts[n : 2 * n], seed=seed
        ),
        "robustness": lambda: probes.decoder_robustness_probe(model, texts[:n], seed=seed),
        "mismatch": lambda: probes.mismatch_probe(model, texts[:n], num_samples=n, seed=seed),
        "trajectory": lambda: probes.trajectory_probe(model, num_samples=n, seed=seed),
        "loss-t": lambda: probes.loss_vs_t_probe(model, texts[:n], seed=seed),
        "positions": lambda: probes.position_probe(model, texts[:n], num_samples=n, seed=seed),
        "frequency": lambda: probes.frequency_probe(model, texts[:n], train),
    }
    for name in probes.PROBES if args.probe == "all" else (args.probe,):
        out = Path(args.out_dir) / f"{model.cfg.name}_probe_{name}.json"
        paths = probes.write_probe(runners[name](), out)
        print(f"probe {name}: wrote {', '.join(str(p) for p in paths.values())}", file=sys.stderr)


def _add_judge_options(
    p: argparse.ArgumentParser, num_samples: int, seeds: str, run_dir_optional: bool = False
) -> None:
    p.add_argument("run_dir", nargs="?" if run_dir_optional else None)
    p.add_argument("-n", "--num-samples", type=int, default=num_samples, help="samples per seed")
    p.add_argument("--seeds", type=_int_list, default=_int_list(seeds), help="comma-separated sampling seeds")
    p.add_argument(
        "--sampler", default=None, help="euler | euler_maruyama | ddim | ddpm | dpmpp_2m (default: the run's config)"
    )
    p.add_argument("--judge", default="smollm2-135m", help="judge causal LM: short name, local dir or hub id")
    p.add_argument("--mauve-max-len", type=int, default=256, help="judge tokens per text (BOS incl.), MAUVE and PPL")
    p.add_argument("--mauve-seed", type=int, default=25, help="MAUVE k-means seed")
    p.add_argument("--mauve-pooling", default="last", help="last | mean over the judge's final hidden states")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None, help="JSON file to write (PNG/Markdown beside it)")


def _add_seq2seq_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--guidance-scale", type=float, default=None, help="seq2seq: classifier-free guidance (1: none)")
    p.add_argument("--candidates", type=int, default=None, help="seq2seq: MBR over this many candidates per source")


def _cmd_bench(args: argparse.Namespace) -> None:
    from ldlm.apps.bench.benchmarks import run_benchmarks

    if Path(args.out).suffix != ".json":
        raise CLIError(f"--out {args.out!r} must end in .json (the PNG is written beside it)")
    from ldlm.sampling.samplers import SAMPLERS

    if (args.latent_run is None) != (args.ar_run is None):
        raise CLIError("--latent-run and --ar-run go together: pass both or neither")
    if args.quality_sampler not in SAMPLERS or args.quality_steps < 1:
        raise CLIError(f"--quality-sampler must be one of {', '.join(SAMPLERS)} and --quality-steps >= 1")
    lengths = tuple(args.quality_lengths) if args.quality_lengths else None
    result = run_benchmarks(
        args.out, smoke=args.smoke, batch=args.batch, quality_sampler=args.quality_sampler,
        quality_steps=args.quality_steps, quality_only=args.quality_only, latent_run=args.latent_run,
        ar_run=args.ar_run, quality_lengths=lengths,
    )  # fmt: skip
    print(json.dumps({k: v for k, v in result.items() if isinstance(v, float)}, indent=2))
    print(f"wrote {args.out} and {Path(args.out).with_suffix('.png')}", file=sys.stderr)


def _cmd_gpu_check(args: argparse.Namespace) -> None:
    import dataclasses

    import torch

    from ldlm.apps.bench.gpu_check import CheckConfig, run_check

    if not args.smoke and not torch.cuda.is_available():
        raise CLIError("the full GPU check needs a CUDA device (this machine has none): use --smoke on a CPU")
    c = CheckConfig.smoke_config() if args.smoke else CheckConfig()
    c = dataclasses.replace(c, steps=args.steps or c.steps, budget_s=c.budget_s if args.budget is None else args.budget)
    result = run_check(args.out, c, only=tuple(args.only.split(",")) if args.only else ())
    print(json.dumps(result, indent=2))
    print(f"wrote {args.out}", file=sys.stderr)


def _cmd_ablate(args: argparse.Namespace) -> None:
    from ldlm.apps.ablation import ablate

    rows = [r.strip() for r in args.rows.split(",") if r.strip()] if args.rows else None
    ablate(
        args.table,
        seeds=args.seeds,
        rows=rows,
        out_dir=args.out_dir,
        runs_dir=args.runs_dir,
        markdown=args.markdown,
        dry_run=args.dry_run,
        report_only=args.report_only,
        generate_only=args.generate_only,
        progress=args.progress,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ldlm", description="Latent diffusion language models (COSMOS, LDLM)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a preset or YAML config")
    p.add_argument("config", help="preset name (see `ldlm configs`) or path to a YAML file")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. autoencoder_train.steps=100")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in output_dir: skip finished stages, resume the interrupted one from its checkpoint",
    )
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("sample", help="generate texts from a trained run")
    p.add_argument("run_dir")
    p.add_argument("-n", "--num-samples", type=int, default=16)
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the run's config)")
    p.add_argument(
        "--sampler", default=None, help="euler | euler_maruyama | ddim | ddpm | dpmpp_2m (default: the run's config)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None, help="also write the texts here, one per line")
    p.add_argument("--source-file", default=None, help="seq2seq: .txt (one source a line) or .jsonl of sources")
    p.add_argument("--source-field", default="source", help="the .jsonl field holding the source")
    p.add_argument("--revision", default=None, help="hub id only: branch, tag or commit to load")
    _add_seq2seq_options(p)
    _add_time_grid_options(p)
    p.set_defaults(func=_cmd_sample)

    p = sub.add_parser("quickstart", help="train a CPU-sized COSMOS on the offline news corpus, sample, judge")
    p.add_argument("--config", default="quickstart")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--out", default="results/quickstart.json")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_quickstart)

    p = sub.add_parser("report", help="judge a trained run against its untrained twin; write JSON + curves")
    p.add_argument("run_dir")
    p.add_argument("--out", required=True, help="JSON file to write (a _curves.png is written beside it)")
    p.add_argument("-n", "--num-samples", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("evaluate", help="unconditional suite: model vs real held-out texts, mean ± std over seeds")
    _add_judge_options(p, num_samples=128, seeds="0,1,2")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the run's config)")
    p.add_argument("--paper", action="store_true", help="the papers' scale: 1,000 samples x 5 seeds")
    p.add_argument(
        "--checkpoint", default=None, help="evaluate the EMA weights of RUN_DIR/<stage>/checkpoints/step_N instead"
    )
    p.add_argument(
        "--source",
        choices=("samples", "reconstruction"),
        default="samples",
        help="reconstruction: score the autoencoder round trips of held-out texts (the reference row's, disjoint "
        "from the MAUVE reference) instead of samples: the decoder's ceiling",
    )
    _add_seq2seq_options(p)
    p.add_argument("--bertscore-model", default="minilm-l6", help="seq2seq: BERTScore model (short name or dir)")
    p.add_argument("--no-bertscore", action="store_true", help="seq2seq: skip BERTScore")
    p.add_argument("--revision", default=None, help="hub id only: branch, tag or commit to load")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("push", help="upload a trained model (weights, config, card, results) to the hub in one commit")
    p.add_argument("run_dir", help="a run directory or a save_pretrained directory")
    p.add_argument("--repo", required=True, help="hub repository id, owner/name (created if missing)")
    p.add_argument("--private", action="store_true", help="create the repository private")
    p.add_argument("--revision", default=None, help="branch to commit to (created if missing; default: main)")
    p.add_argument("--token", default=None, help="hub token (default: HF_TOKEN or the `hf auth login` token)")
    p.set_defaults(func=_cmd_push)

    p = sub.add_parser("sweep", help="judge PPL, entropy and MAUVE against the number of sampling steps")
    _add_judge_options(p, num_samples=64, seeds="0")
    p.add_argument("--steps-list", type=_int_list, default=_int_list("10,25,50,100,200"))
    p.add_argument(
        "--samplers",
        type=_name_list,
        default=None,
        help="comma-separated samplers to compare, e.g. euler,ddim,dpmpp_2m: rows per (sampler, steps), a line per "
        "sampler (default: the one --sampler, or the run's; default --out results/NAME_sampler_sweep.json)",
    )
    _add_time_grid_options(p)
    p.set_defaults(func=_cmd_sweep)

    p = sub.add_parser("curve", help="judge PPL, entropy, MAUVE, Div of kept checkpoints against training minutes")
    _add_judge_options(p, num_samples=128, seeds="0", run_dir_optional=True)
    p.add_argument("more_run_dirs", nargs="*", help="more runs on the same data, drawn on the same plot")
    p.add_argument("--minutes", type=_float_list, default=None, help="only the checkpoints nearest these minutes")
    p.add_argument("--replot", default=None, help="rebuild JSON trends + PNG of an existing curves JSON, no scoring")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the run's config)")
    p.set_defaults(func=_cmd_curve)

    p = sub.add_parser("compare", help="one table from several evaluate reports on the same data (NAME=REPORT.json)")
    p.add_argument("reports", nargs="+", help="NAME=PATH of each `ldlm evaluate` report JSON")
    p.add_argument("--out", required=True, help="JSON file to write")
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser("probe", help="latent-space probes (JSON + PNG each)")
    p.add_argument(
        "probe",
        choices=["interpolation", "robustness", "mismatch", "trajectory", "loss-t", "positions", "frequency", "all"],
    )
    p.add_argument("run_dir")
    p.add_argument("-n", "--num-texts", type=int, default=32, help="texts / samples / pairs per probe")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--judge", default="smollm2-135m", help="judge for the interpolation probe")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out-dir", default="results", help="writes NAME_probe_PROBE.{json,png} here")
    p.set_defaults(func=_cmd_probe)

    p = sub.add_parser("bench", help="speed: latent sampling vs GPT-2, step cost, %% of matmul peak (JSON + PNG)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, a few seconds (for tests/CI)")
    p.add_argument("--batch", type=int, default=None, help="texts per sampling batch and step-cost row (default 8)")
    p.add_argument("--out", default="results/bench.json", help="JSON file to write (a PNG is written beside it)")
    p.add_argument(
        "--quality-sampler", default="ddim",
        help="latent sampler of the equal-quality rows latent_over_ar_time_L* (default ddim)",
    )  # fmt: skip
    p.add_argument("--quality-steps", type=int, default=32, help="its model calls (default 32)")
    p.add_argument(
        "--quality-lengths", type=_int_list, default=None, help="comma-separated L of those rows (default 128,512,1024)"
    )
    p.add_argument(
        "--quality-only", action="store_true",
        help="run only the equal-quality rows (+ trained_models) and merge them into --out's existing JSON",
    )  # fmt: skip
    p.add_argument("--latent-run", default=None, help="a trained latent run/model dir, timed against --ar-run")
    p.add_argument("--ar-run", default=None, help="a trained `recipe: ar` run/model dir (key trained_models)")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("gpu-check", help="paper presets' training step time, memory, tokens/s + bench at batch 512")
    p.add_argument("--smoke", action="store_true", help="tiny presets, fp32, a few steps: seconds on a CPU")
    p.add_argument("--out", default="results/gpu_check.json", help="JSON file to write (rewritten after each item)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per training row (default 50; smoke 3)")
    p.add_argument("--budget", type=float, default=None, help="seconds; later items are skipped (default 540)")
    p.add_argument("--only", default=None, help="comma-separated item names (see the JSON's config.order), or bench")
    p.set_defaults(func=_cmd_gpu_check)

    p = sub.add_parser("ablate", help="reproduce a paper ablation table: train + measure rows x seeds, JSON + Markdown")
    p.add_argument("table", help="spec name in configs/ablations/ (e.g. cosmos_table2) or a YAML path")
    p.add_argument("--seeds", type=_int_list, default=None, help="training seeds (default: the spec's)")
    p.add_argument("--rows", default=None, help="comma-separated row names (default: all rows)")
    mode = p.add_mutually_exclusive_group()  # at most one of the three modes
    mode.add_argument("--dry-run", action="store_true", help="print the planned runs and their train commands only")
    mode.add_argument("--report-only", action="store_true", help="rebuild JSON + Markdown from finished runs only")
    mode.add_argument(
        "--generate-only",
        action="store_true",
        help="train, sample and run the judge-free probes only (OUT_DIR/TABLE/generated/); score later",
    )
    p.add_argument("--out-dir", default="results/ablations", help="per-run JSONs in OUT_DIR/TABLE/, TABLE.json here")
    p.add_argument("--runs-dir", default="runs/ablations", help="run directories: RUNS_DIR/TABLE/ROW/seedK")
    p.add_argument("--markdown", default="docs/results.md", help="Markdown file that holds the table's block")
    p.add_argument("--progress", action="store_true", help="training progress bars (default: one line per run)")
    p.set_defaults(func=_cmd_ablate)

    p = sub.add_parser("configs", help="list the presets")
    p.set_defaults(func=_cmd_configs)
    for command in sub.choices.values():  # `--out` must not silently mean `--out-dir` (a folder named *.json)
        command.allow_abbrev = False
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from ldlm.config import ConfigError
    from ldlm.data import DatasetError, FeatureCacheError
    from ldlm.model.encoders import EncoderError
    from ldlm.storage.io import WeightFileError
    from ldlm.storage.provenance import code_revision
    from ldlm.storage.resources import ModelNotFoundError

    code_revision()  # cached for the process: runs record the commit of the code loaded now, not of a later HEAD
    try:
        args.func(args)
    except (
        CLIError,
        ConfigError,
        DatasetError,
        EncoderError,
        FeatureCacheError,
        WeightFileError,
        ModelNotFoundError,
        FileNotFoundError,
        ValueError,
        FloatingPointError,  # a non-finite loss or gradient norm under on_nonfinite=stop, a non-finite judge output
    ) as err:
        print(f"ldlm {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
