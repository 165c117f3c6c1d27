"""Run an ablation table: train every row x seed with the ``ldlm train`` recipe entry, measure it, one JSON each.

A run's JSON (``OUT_DIR/TABLE/ROW-seedK.json``) is written atomically once its figures exist; a later
invocation skips every run whose JSON is there and matches the spec (resumable). A run whose model was saved
but not measured is loaded, not retrained; an interrupted training continues from its checkpoints.
"""

from __future__ import annotations

import json
import logging
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ldlm.apps.ablation.spec import METRICS, AblationSpec, Row, shared_row
from ldlm.apps.ablation.training import training_log
from ldlm.config import RunConfig, load_config
from ldlm.storage.io import atomic_write_json, read_json

__all__ = [
    "PlannedRun",
    "generate_one",
    "generated_path",
    "plan_runs",
    "read_result",
    "run_key",
    "run_one",
    "shared_result",
    "suite_config",
    "train_command",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlannedRun:
    """One row x seed: where it trains, where its figures go, and the overrides that make its config."""

    row: Row
    seed: int
    run_dir: Path
    result: Path
    overrides: tuple[str, ...]  # common + row + seed + output_dir: exactly what `ldlm train BASE ...` gets
    shared: SharedRun | None = None  # the other table's run this one is (a ``same_as`` row)


@dataclass(frozen=True)
class SharedRun:
    """The run of another table that a ``same_as`` row shares: its figures, and the key they must match."""

    table: str
    result: Path
    key: dict


def plan_runs(spec: AblationSpec, *, seeds: list[int], rows: list[Row], runs_dir: Path, out_dir: Path):
    """The runs of the runnable ``rows`` x ``seeds``, in table order. A ``same_as`` row trains in the other
    table's run directory, so a model trained for either table serves both."""
    planned = []
    for row in rows:
        if not row.runnable:
            continue
        source = shared_row(spec, row) if row.same_as else None
        for seed in seeds:
            result = Path(out_dir) / spec.name / f"{row.name}-seed{seed}.json"
            shared = None
            if source is None:
                run_dir = Path(runs_dir) / spec.name / row.name / f"seed{seed}"
            else:
                other = plan_runs(source[0], seeds=[seed], rows=[source[1]], runs_dir=runs_dir, out_dir=out_dir)[0]
                run_dir, shared = other.run_dir, SharedRun(source[0].name, other.result, run_key(*source))
            overrides = (*spec.config_overrides(row), f"seed={seed}", f"output_dir={run_dir}")
            planned.append(PlannedRun(row, seed, run_dir, result, overrides, shared))
    return planned


def _identity(spec: AblationSpec, run: PlannedRun, ablate_command: str) -> dict:
    """What names a per-run JSON: its table, row, seed, the key it must match and the commands that make it."""
    return {
        "table": spec.name,
        "row": run.row.name,
        "label": run.row.title,
        "seed": run.seed,
        "key": run_key(spec, run.row),
        "overrides": list(run.overrides),
        "train_command": train_command(spec, run),
        "ablate_command": ablate_command,
    }


def shared_result(spec: AblationSpec, run: PlannedRun, *, ablate_command: str) -> dict | None:
    """For a ``same_as`` row: the other table's measured run restricted to this table's figures, written as this
    run's JSON (with ``shared_from``); None when that run is not measured yet (then this one runs as usual)."""
    if run.shared is None:
        return None
    source = read_result(run.shared.result, run.shared.key)
    if source is None:
        return None
    sources = {METRICS[m][1] for m in spec.metrics}
    result = {
        **source,
        **_identity(spec, run, ablate_command),
        "shared_from": str(run.shared.result),
        "metrics": {
            **summary_metrics(spec, source.get("summary", {})),
            **{m: source["metrics"][m] for m in spec.metrics if m in source["metrics"]},
        },
        "reference": {m: v for m, v in source.get("reference", {}).items() if m in spec.metrics},
        "probes": {name: v for name, v in source.get("probes", {}).items() if name in sources},
    }
    atomic_write_json(run.result, result)
    return result


def summary_metrics(spec: AblationSpec, summary: dict) -> dict:
    """The spec's figures that a run's summary.json holds (None where this run's recipe does not report one)."""
    return {m: summary.get(m) for m in spec.metrics if METRICS[m][1] == "summary"}


def train_command(spec: AblationSpec, run: PlannedRun) -> str:
    """The ``ldlm train`` command line that trains this run on its own."""
    return shlex.join(["ldlm", "train", spec.base, *run.overrides])


def run_key(spec: AblationSpec, row: Row) -> dict:
    """What a per-run JSON must match to count for the current spec (else it is stale and redone): the config, the
    measurement and, once bumped, the table's and the row's ``revision`` (a code change that alters the row)."""
    key = {
        "base": spec.base,
        "config_overrides": spec.config_overrides(row),
        "evaluation": vars(spec.evaluation),
        "metrics": spec.metrics,
    }
    if spec.revision or row.revision:
        key["revision"] = {"table": spec.revision, "row": row.revision}
    return key


def read_result(path: Path, key: dict) -> dict | None:
    """A per-run JSON that matches ``key``, else None (missing, unreadable or from another spec)."""
    result = read_json(path)
    return result if isinstance(result, dict) and result.get("key") == key else None


def trained_model(cfg: RunConfig, *, progress: bool):
    """``(model, summary, trained_now)``: the saved model when ``cfg.run_dir`` holds a finished run of this very
    config, else the recipe's result (resuming the run's checkpoints only when its config is the same)."""
    from ldlm.pipeline import LatentDiffusionLM
    from ldlm.recipes import RECIPES

    same = read_json(cfg.run_dir / "config.json") == json.loads(json.dumps(cfg.to_dict()))
    summary_file = cfg.run_dir / "summary.json"
    if same and summary_file.is_file() and (cfg.run_dir / "model").is_dir():
        return LatentDiffusionLM.from_pretrained(cfg.run_dir), json.loads(summary_file.read_text()), False
    model, summary = RECIPES[cfg.recipe](cfg, progress=progress, resume=same)
    return model, summary, True


def suite_config(spec: AblationSpec, seed: int):
    from ldlm.evaluation.mauve import MauveProtocol
    from ldlm.evaluation.suite import SuiteConfig

    ev = spec.evaluation
    return SuiteConfig(
        num_samples=ev.num_samples, seeds=(seed,), steps=ev.steps, judge=ev.judge, mauve=MauveProtocol(ev.mauve_max_len)
    )


def generate(model, summary: dict, spec: AblationSpec, seed: int) -> dict:
    """Everything of one trained model that needs no judge: the suite's texts, the judge-free probes and the
    interpolation texts (sampling seed = the run's seed). JSON-serialisable: :func:`score` finishes it, on this
    machine or on one with the judge (train and sample on a GPU node, score anywhere)."""
    from ldlm.data.texts import load_run_texts
    from ldlm.evaluation import probes
    from ldlm.evaluation.suite import generate_texts

    ev, sources = spec.evaluation, {METRICS[m][1] for m in spec.metrics}
    texts = load_run_texts(model.cfg.data).valid  # the run's own held-out split
    n = ev.probe_texts
    if sources & {"mismatch", "robustness", "interpolation"} and len(texts) < 2 * n:
        raise ValueError(f"the run holds out {len(texts)} texts; evaluation.probe_texts={n} needs {2 * n}")
    out: dict = {"summary": summary, "probes": {}, "generated_on": _hardware(model)}
    if "suite" in sources:
        out["suite"] = generate_texts(model, texts, suite_config(spec, seed))
    steps = ev.steps or model.cfg.sample.steps
    runners: dict[str, Callable[[], dict]] = {
        "mismatch": lambda: probes.mismatch_probe(model, texts[:n], num_samples=n, steps_list=(steps,), seed=seed),
        "robustness": lambda: probes.decoder_robustness_probe(model, texts[:n], seed=seed),
    }
    for name in sorted(sources & runners.keys()):
        out["probes"][name] = runners[name]()
    if "interpolation" in sources:
        out["interpolation"] = probes.interpolation_texts(
            model, texts[:n], texts[n : 2 * n], noise_ts=(0.0,), seed=seed
        )
    return out


def _hardware(model) -> str:
    import torch

    device = torch.device(model.device)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type


def score(generated: dict, spec: AblationSpec, cfg: RunConfig, seed: int, judge) -> dict:
    """The spec's figures from :func:`generate`'s output: judge PPL, MAUVE, Div, ... of the texts, the probes'
    figures and summary.json entries, each through the library's own evaluation code."""
    from ldlm.data.texts import load_run_texts
    from ldlm.evaluation import probes
    from ldlm.evaluation.suite import score_texts

    out: dict = {"metrics": {}, "reference": {}, "probes": dict(generated["probes"])}
    if "suite" in generated:
        train = load_run_texts(cfg.data).train  # Mem: the run's own training texts
        report = score_texts(generated["suite"], train, suite_config(spec, seed), judge=judge)
        for m in (m for m in spec.metrics if METRICS[m][1] == "suite"):
            out["metrics"][m], out["reference"][m] = report["model"][m]["mean"], report["reference"][m]["mean"]
        out.update(protocol=report["protocol"], samples=report["per_seed"][0]["samples"], warnings=report["warnings"])
    out["metrics"].update(summary_metrics(spec, generated["summary"]))
    if "interpolation" in generated:
        out["probes"]["interpolation"] = probes.score_interpolation(generated["interpolation"], judge)
    curves = {name: result["curves"] for name, result in out["probes"].items()}
    if "mismatch" in curves:
        out["metrics"]["mismatch"] = curves["mismatch"]["generated"]["mse"][0]
    if "robustness" in curves:
        sigmas = out["probes"]["robustness"]["sigma"]
        out["metrics"]["robustness_bleu"] = curves["robustness"]["decoded"]["bleu"][sigmas.index(1.0)]
    if "interpolation" in curves:
        mus = out["probes"]["interpolation"]["mu"]
        out["metrics"]["interpolation_ppl"] = curves["interpolation"]["no noise"]["judge_ppl"][mus.index(0.5)]
    return out


def generated_path(run: PlannedRun) -> Path:
    """Where :func:`generate_one` keeps a run's unscored outputs: ``OUT_DIR/TABLE/generated/ROW-seedK.json``."""
    return run.result.parent / "generated" / run.result.name


def generate_one(spec: AblationSpec, run: PlannedRun, *, progress: bool = False) -> dict:
    """Train (or load) one run and write its judge-free outputs (:func:`generate`) once; returns that dict with
    ``generated_now`` (not saved). A matching file from an earlier call (or another machine) is read instead."""
    path = generated_path(run)
    done = read_result(path, run_key(spec, run.row))
    if done is not None:
        return {**done, "generated_now": False}
    start = time.perf_counter()
    cfg = load_config(spec.base, list(run.overrides))
    model, summary, trained_now = trained_model(cfg, progress=progress)
    train_minutes = (time.perf_counter() - start) / 60
    generated = {
        "key": run_key(spec, run.row),
        "trained_now": trained_now,
        "train_minutes_this_call": train_minutes,
        **generate(model, summary, spec, run.seed),
        "training": training_log(cfg.run_dir),  # the stages' logged curves travel with the texts
    }
    generated["generate_minutes"] = (time.perf_counter() - start) / 60 - train_minutes
    atomic_write_json(path, generated)
    return {**generated, "generated_now": True}


def run_one(spec: AblationSpec, run: PlannedRun, *, judge, ablate_command: str, progress: bool = False) -> dict:
    """Train (or load), generate and score one run and write its JSON; returns that dict."""
    generated = generate_one(spec, run, progress=progress)
    start = time.perf_counter()
    cfg = load_config(spec.base, list(run.overrides))
    measured = score(generated, spec, cfg, run.seed, judge)
    result = {
        **_identity(spec, run, ablate_command),
        "run_dir": str(run.run_dir),
        "trained_now": generated["trained_now"],
        "generated_now": generated["generated_now"],
        "generated_on": generated["generated_on"],
        "train_minutes_this_call": generated["train_minutes_this_call"],
        "eval_minutes": generated["generate_minutes"] + (time.perf_counter() - start) / 60,
        "judge": spec.evaluation.judge,
        "summary": generated["summary"],
        "training": generated.get("training", {}),
        **measured,
    }
    atomic_write_json(run.result, result)
    return result
