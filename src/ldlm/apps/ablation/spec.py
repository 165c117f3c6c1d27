"""Ablation specs: one YAML file per paper table (``configs/ablations/``), validated before anything trains.

A spec names a base preset, overrides shared by every row (``common``), the rows (each a list of dotted
overrides plus the paper's numbers), the training seeds and the figures to measure. Loading it applies every
runnable row's overrides through :func:`ldlm.config.load_config`, so a typo fails with the field's name before
the first run starts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ldlm.config import CONFIG_DIR, ConfigError, from_dict, load_config, parse_override
from ldlm.storage.io import read_yaml_mapping

__all__ = [
    "ABLATION_DIR",
    "METRICS",
    "AblationSpec",
    "AblationSpecError",
    "EvalSpec",
    "Row",
    "load_spec",
    "shared_row",
]

ABLATION_DIR = CONFIG_DIR / "ablations"
RESERVED = ("seed", "output_dir")  # set by the runner for each run
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")  # table and row names are file names

# metric -> (column label, where its value comes from: the unconditional suite, the run's summary.json, a probe)
METRICS = {
    "judge_ppl": ("judge PPL ↓", "suite"),
    "judge_ppl_per_sample": ("judge PPL per sample ↓", "suite"),
    "mauve": ("MAUVE ↑", "suite"),
    "div": ("Div ↑", "suite"),
    "entropy": ("entropy", "suite"),
    "mem": ("Mem ↓", "suite"),
    "heldout_token_accuracy": ("held-out token acc. ↑", "summary"),
    "heldout_head_accuracy_true_h": ("token-head acc. on true h ↑", "summary"),
    "mismatch": ("MSE(ẑ, E(D(ẑ))) ↓", "mismatch"),
    "robustness_bleu": ("BLEU of decode(z + ε) ↑", "robustness"),
    "interpolation_ppl": ("judge PPL of decode(z₁/2 + z₂/2) ↓", "interpolation"),
}


class AblationSpecError(ValueError):
    """An ablation spec is invalid; the message names the file and the field."""


@dataclass
class EvalSpec:
    """How every trained run is measured (the suite of ``ldlm evaluate`` and the probes of ``ldlm probe``)."""

    num_samples: int = 128  # generated texts per run; as many held-out texts form the MAUVE reference
    steps: int | None = None  # sampling steps (None: the run's sample.steps); the mismatch probe uses them too
    judge: str = "smollm2-135m"  # judge LM for PPL and the MAUVE features
    mauve_max_len: int = 256  # judge tokens per text (BOS included) for PPL and MAUVE
    probe_texts: int = 64  # held-out texts (and generated samples) per probe; interpolation pairs 2x this many


@dataclass
class Row:
    """One line of the table: overrides on top of base + common, and the paper's figures for it."""

    name: str = ""  # file-name-safe id, used by --rows and in paths
    label: str | None = None  # what the table shows (default: name)
    overrides: list[str] = field(default_factory=list)
    paper: dict = field(default_factory=dict)  # metric -> the paper's number or null (not reported)
    note: str | None = None
    runnable: bool = True
    reason: str | None = None  # why a runnable: false row cannot be run here
    same_as: str | None = None  # "TABLE/ROW": the very config of another table's row; its runs are shared
    # Bump when a code change alters what this row measures: its per-run JSONs of an older revision are redone.
    revision: int = 0

    @property
    def title(self) -> str:
        return self.label or self.name


@dataclass
class AblationSpec:
    """A paper table to reproduce: base preset, shared overrides, rows, seeds, figures."""

    name: str = ""
    title: str = ""
    paper: str = ""  # which table of which paper the paper numbers come from
    base: str = ""  # preset name or YAML path
    common: list[str] = field(default_factory=list)  # overrides applied to every row (e.g. the CPU budget)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    metrics: list[str] = field(default_factory=list)
    scale: dict = field(default_factory=dict)  # metric -> factor on our values in the Markdown (paper units)
    paper_reference: dict = field(default_factory=dict)  # the paper's figures for real texts
    evaluation: EvalSpec = field(default_factory=EvalSpec)
    notes: str | None = None
    rows: list[Row] = field(default_factory=list)
    revision: int = 0  # as Row.revision, for every row (the run key holds both; 0 and 0 leave the key as it was)

    def row(self, name: str) -> Row:
        return next(r for r in self.rows if r.name == name)

    def config_overrides(self, row: Row) -> list[str]:
        """The overrides that define the row's config (every seed): common, then the row's own."""
        return [*self.common, *row.overrides]


def spec_path(table: str | Path) -> Path:
    """A spec by name (``configs/ablations/NAME.yaml``) or an explicit YAML path."""
    path = Path(table)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise AblationSpecError(f"ablation spec {str(path)!r} does not exist")
        return path
    candidate = ABLATION_DIR / f"{table}.yaml"
    if not candidate.is_file():
        known = ", ".join(sorted(p.stem for p in ABLATION_DIR.glob("*.yaml")))
        raise AblationSpecError(f"ablation table {str(table)!r} not found: use one of {known} or a YAML path")
    return candidate


def load_spec(table: str | Path, *, check_configs: bool = True) -> AblationSpec:
    """Read and validate a spec; ``check_configs`` also builds every runnable row's config (and checks its
    encoder) so that a bad override fails here, before any training."""
    path = spec_path(table)
    data = read_yaml_mapping(path, AblationSpecError, "spec fields (name, base, rows, ...)")
    try:
        spec = from_dict(AblationSpec, data)
        _validate(spec)
        if check_configs:
            _check_configs(spec)
    except ConfigError as err:
        raise AblationSpecError(f"{path}: {str(err).replace('config key', 'key')}") from err
    return spec


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_figures(figures: dict, metrics: list[str], where: str) -> None:
    """``{metric: number or null}`` with metrics from the spec's list."""
    _require(isinstance(figures, dict), f"{where}: expected a mapping metric -> number or null, got {figures!r}")
    for metric, value in figures.items():
        _require(metric in metrics, f"{where}.{metric}: not among the spec's metrics ({', '.join(metrics)})")
        number = isinstance(value, int | float) and not isinstance(value, bool)
        _require(value is None or number, f"{where}.{metric}: expected a number or null, got {value!r}")


def _check_overrides(items: list[str], where: str) -> None:
    for i, item in enumerate(items):
        key = item.split("=", 1)[0].strip()
        _require(key not in RESERVED, f"{where}[{i}]: {key!r} is set per run by `ldlm ablate`; remove {item!r}")
        parse_override(item)


def _validate(spec: AblationSpec) -> None:
    """Field checks that need no config: names, metrics, seeds, figures, runnable/reason."""
    for key in ("name", "title", "paper", "base"):
        _require(bool(getattr(spec, key)), f"{key}: required (a non-empty string)")
    _require(bool(_NAME.match(spec.name)), f"name={spec.name!r}: use lowercase letters, digits, '_', '.', '-'")
    _require(bool(spec.metrics), f"metrics: list at least one of {', '.join(METRICS)}")
    for metric in spec.metrics:
        _require(metric in METRICS, f"metrics: {metric!r} is unknown; use {', '.join(METRICS)}")
    _require(bool(spec.seeds), "seeds: list at least one training seed")
    _require(len(set(spec.seeds)) == len(spec.seeds), f"seeds: {spec.seeds} repeats a seed")
    _require(all(s >= 0 for s in spec.seeds), f"seeds: {spec.seeds} must be >= 0")
    _check_figures(spec.paper_reference, spec.metrics, "paper_reference")
    _check_figures(spec.scale, spec.metrics, "scale")
    _require(all(v is not None and v > 0 for v in spec.scale.values()), "scale: factors must be numbers > 0")
    ev = spec.evaluation
    _require(ev.num_samples >= 2, f"evaluation.num_samples={ev.num_samples} must be >= 2")
    _require(ev.probe_texts >= 2, f"evaluation.probe_texts={ev.probe_texts} must be >= 2")
    _require(ev.steps is None or ev.steps >= 1, f"evaluation.steps={ev.steps} must be >= 1 (or null)")
    _check_overrides(spec.common, "common")
    _require(_count(spec.revision), f"revision={spec.revision!r}: expected an integer >= 0")
    _require(bool(spec.rows), "rows: the table needs at least one row")
    names = [r.name for r in spec.rows]
    for i, row in enumerate(spec.rows):
        where = f"rows[{i}]" + (f" ({row.name})" if row.name else "")
        _require(bool(_NAME.match(row.name)), f"{where}.name={row.name!r}: use lowercase letters, digits, _ . -")
        _require(names.count(row.name) == 1, f"{where}.name: {row.name!r} names two rows")
        _check_figures(row.paper, spec.metrics, f"{where}.paper")
        _check_overrides(row.overrides, f"{where}.overrides")
        _require(_count(row.revision), f"{where}.revision={row.revision!r}: expected an integer >= 0")
        if row.runnable:
            _require(row.reason is None, f"{where}.reason: only for rows marked runnable: false")
        else:
            _require(bool(row.reason), f"{where}.reason: say why a runnable: false row cannot be run")
        if row.same_as is not None:
            table, _, other = row.same_as.partition("/")
            _require(
                bool(_NAME.match(table)) and bool(_NAME.match(other)) and table != spec.name,
                f"{where}.same_as={row.same_as!r}: use 'TABLE/ROW' naming a row of another ablation table",
            )
            _require(row.runnable, f"{where}.same_as: a runnable: false row has no runs to share")


def _check_configs(spec: AblationSpec) -> None:
    """Build base + common, then every runnable row's config, and check its encoder (layer, vocabulary)."""
    from ldlm.model.encoders import check_encoder_config

    try:
        load_config(spec.base, spec.common)
    except ConfigError as err:
        raise ConfigError(f"base={spec.base!r} with common overrides: {err}") from err
    for row in spec.rows:
        if not row.runnable:
            continue
        try:
            cfg = load_config(spec.base, spec.config_overrides(row))
            check_encoder_config(cfg)
        except ConfigError as err:
            raise ConfigError(f"row {row.name!r}: {err}") from err
        if row.same_as is not None:
            _check_shared(spec, row, cfg.to_dict())


def shared_row(spec: AblationSpec, row: Row) -> tuple[AblationSpec, Row]:
    """The (spec, row) that ``row.same_as`` names: the same training config and evaluation in another table."""
    table, _, name = row.same_as.partition("/")
    try:
        other = load_spec(table, check_configs=False)
    except AblationSpecError as err:
        raise ConfigError(f"row {row.name!r}: same_as={row.same_as!r}: {err}") from err
    match = [r for r in other.rows if r.name == name]
    _require(bool(match), f"row {row.name!r}: same_as={row.same_as!r}: {table} has no row {name!r}")
    return other, match[0]


def _check_shared(spec: AblationSpec, row: Row, config: dict) -> None:
    """A shared row must train exactly the other row's config, be measured the same way and need no figure the
    other table does not measure: then the other table's runs are this row's runs."""
    other, source = shared_row(spec, row)
    where = f"row {row.name!r}: same_as={row.same_as!r}"
    _require(source.runnable and source.same_as is None, f"{where}: that row must be runnable and not shared itself")
    _require(
        load_config(other.base, other.config_overrides(source)).to_dict() == config,
        f"{where}: its config differs from this row's (base + common + overrides must resolve to the same config)",
    )
    _require(
        vars(other.evaluation) == vars(spec.evaluation),
        f"{where}: evaluation differs ({vars(other.evaluation)} vs {vars(spec.evaluation)})",
    )
    missing = [m for m in spec.metrics if m not in other.metrics and METRICS[m][1] != "summary"]  # summary: any run
    _require(not missing, f"{where}: {other.name} does not measure {', '.join(missing)}")
