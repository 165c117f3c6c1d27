"""The model card (``README.md`` with Hub metadata) that every saved model carries, filled from its run.

The card is rendered from what the model directory holds: ``config.json`` (recipe, paper, sizes, schedule, sampler,
data, steps), the run's ``summary.json`` (held-out token accuracy, validation losses, minutes) and
``eval_results.json``, where ``ldlm evaluate`` records its figures with the command that reproduces each
(:func:`record_evaluation`). Metadata is built with ``huggingface_hub.ModelCardData``: library ``ldlm``, tags,
datasets, the frozen encoder's hub id as ``base_model`` (referenced by name, its weights are never copied),
licence, metrics and ``model-index`` results. Commands name the model as ``{model}``, filled at render time with
the local directory or, when pushing, the repository id.
"""

from __future__ import annotations

import json
from pathlib import Path

from ldlm.config import RunConfig, config_from_dict
from ldlm.storage.hub import CARD_NAME, CONFIG_NAME, EVAL_NAME, SUMMARY_NAME
from ldlm.storage.io import atomic_write_json, atomic_write_text

__all__ = [
    "build_card",
    "find_summary",
    "local_ref",
    "read_evaluations",
    "record_evaluation",
    "render_card",
    "write_card",
]

LICENSE = "mit"  # the package's licence; the frozen encoder keeps its own
MODEL_REF = "{model}"  # placeholder for the model's directory or hub id in reproduce commands

_PAPERS = {
    "cosmos": (
        "COSMOS: *Compressed and Smooth Latent Space for Text Diffusion Modeling* (Meshchaninov et al., NeurIPS 2025)",
        None,
    ),
    "ldlm": (
        "LDLM: *How to Train Your Latent Diffusion Language Model Jointly With the Latent Space* "
        "(Meshchaninov et al., 2026, arXiv:2605.07933)",
        "2605.07933",
    ),
    "ar": ("the autoregressive baseline of matched size that the COSMOS and LDLM papers compare against", None),
}
_PAPERS["seq2seq"] = (_PAPERS["cosmos"][0] + ", its sequence-to-sequence variant (App. C.1)", None)

_SUMMARY_FIGURES = {  # summary.json key -> (label, model-index metric type)
    "heldout_token_accuracy": ("held-out token accuracy (autoencoder reconstruction)", "accuracy"),
    "heldout_mse": ("held-out MSE(h, ĥ)", "mse"),
    "val_diffusion_loss": ("validation diffusion loss", "loss"),
    "val_loss": ("validation loss (nats/token)", "loss"),
    "val_ppl": ("validation perplexity", "perplexity"),
    "val_seq2seq_loss": ("validation seq2seq diffusion loss", "loss"),
}
_EVAL_LABELS = {
    "judge_ppl": ("judge PPL (token-level) ↓", "perplexity"),
    "judge_ppl_per_sample": ("judge PPL (per-sample mean) ↓", "perplexity"),
    "mauve": ("MAUVE ↑", "mauve"),
    "div": ("Div", "diversity"),
    "entropy": ("entropy (nats)", "entropy"),
    "mem": ("Mem", "memorization"),
    "bleu": ("BLEU ↑", "bleu"),
    "rouge1": ("ROUGE-1 ↑", "rouge"),
    "rouge2": ("ROUGE-2 ↑", "rouge"),
    "rougeL": ("ROUGE-L ↑", "rouge"),
    "bertscore_f1": ("BERTScore F1 ↑", "bertscore"),
}


# ------------------------------------------------------------------------------------------ run facts


def find_summary(model_dir: Path) -> dict:
    """The run's ``summary.json``: beside the weights (a hub snapshot) or in the run directory above ``model/``."""
    candidates = [model_dir / SUMMARY_NAME]
    if model_dir.name == "model":
        candidates.append(model_dir.parent / SUMMARY_NAME)
    for path in candidates:
        if path.is_file():
            try:
                return json.loads(path.read_text())
            except (OSError, ValueError):
                return {}
    return {}


def read_evaluations(model_dir: Path) -> dict[str, dict]:
    """Evaluation kind (``unconditional`` / ``seq2seq``) -> its recorded figures (empty before `ldlm evaluate`)."""
    try:
        data = json.loads((Path(model_dir) / EVAL_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def record_evaluation(model_dir: str | Path, kind: str, figures: dict, command: str, report: str | None) -> Path:
    """Store one evaluation's figures (metric -> ``{mean, std}`` or a number) beside the weights and re-render the
    card. ``command`` names the model as ``{model}``; ``report`` is the JSON report written beside it."""
    model_dir = Path(model_dir)
    records = read_evaluations(model_dir)
    records[kind] = {"figures": figures, "command": command, "report": report}
    atomic_write_json(model_dir / EVAL_NAME, records)
    return write_card(model_dir)


def _int(n) -> str:
    return f"{n:,}" if isinstance(n, int) else str(n)


def _highlights(cfg: RunConfig) -> list[tuple[str, str]]:
    """The config's defining sizes and choices, (label, value) rows."""
    enc, sc = cfg.encoder, cfg.sample
    rows = [("frozen encoder E_h", f"`{enc.name}` (layer {enc.layer}), L = {enc.max_length} tokens")]
    if cfg.recipe == "ar":
        ar = cfg.ar
        rows.append(
            ("decoder", f"{ar.layers} layers, width {ar.width}, {ar.heads} heads (causal, encoder's tokenizer)")
        )
        return rows
    ae, diff = cfg.autoencoder, cfg.diffusion
    d = "D (the encoder's width)" if ae.latent_encoder == "identity" else ae.latent_dim or ae.width
    rows += [
        (
            "latents",
            f"N = {ae.num_latents} x d = {d} (compression {enc.max_length}/{ae.num_latents} tokens per latent)",
        ),
        ("autoencoder", f"{ae.latent_encoder}, width {ae.width}, {ae.encoder_blocks}+{ae.decoder_blocks} blocks"),
        ("denoiser", f"{diff.layers} layers, width {diff.width}, {diff.heads} heads"),
        ("noise schedule", f"{diff.schedule} (d = {diff.schedule_d}), {diff.timestep_sampler} timesteps"),
        ("sampler", f"{sc.sampler}, {sc.steps} steps"),
    ]
    if cfg.recipe == "seq2seq":
        s2s = cfg.seq2seq
        rows.append(("source", f"{s2s.encoder_layers} condition layers, guidance {s2s.guidance_scale}"))
    return rows


def _stages(cfg: RunConfig) -> list[tuple[str, int]]:
    """(stage, steps) of the recipe's training stages that ran."""
    names = {
        "cosmos": ("autoencoder_train", "diffusion_train"),
        "seq2seq": ("autoencoder_train", "diffusion_train", "seq2seq_train"),
        "ldlm": ("joint_train", "decoder_train"),
        "ar": ("ar_train",),
    }[cfg.recipe]
    if cfg.recipe == "seq2seq" and cfg.seq2seq.init_from:
        names = ("seq2seq_train",)
    return [(n, getattr(cfg, n).steps) for n in names if getattr(cfg, n).steps]


def _dataset_ids(cfg: RunConfig) -> list[str]:
    from ldlm.data.registry import dataset_hub_id

    names = [cfg.data.dataset, *cfg.data.train_extra, *cfg.data.autoencoder_extra]
    return list(dict.fromkeys(i for i in map(dataset_hub_id, names) if i))


def _fmt(value) -> str:
    if isinstance(value, dict):
        if value.get("mean") is None:
            return "n/a"
        std = f" ± {value['std']:.3g}" if value.get("n", 1) > 1 and value.get("std") is not None else ""
        return f"{value['mean']:.4g}{std}"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _mean(value) -> float | None:
    return value.get("mean") if isinstance(value, dict) else value if isinstance(value, int | float) else None


# ------------------------------------------------------------------------------------------ the card


def build_card(cfg: RunConfig, summary: dict, evaluations: dict[str, dict], *, model_ref: str):
    """A ``huggingface_hub.ModelCard`` for the model ``model_ref`` (its directory or hub id)."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    from ldlm.storage.resources import hub_name

    paper, arxiv = _PAPERS[cfg.recipe]
    datasets = _dataset_ids(cfg)
    dataset_type = datasets[0] if datasets else cfg.data.dataset
    train_cmd = f"ldlm train {model_ref}/config.json"  # config.json is valid YAML: the run's resolved config
    results, rows = [], []
    for key, (label, metric) in _SUMMARY_FIGURES.items():
        if isinstance(summary.get(key), int | float):
            rows.append((label, _fmt(summary[key]), train_cmd))
            results.append((metric, key, float(summary[key])))
    for kind, record in evaluations.items():
        command = str(record.get("command", "")).replace(MODEL_REF, model_ref)
        for key, value in record.get("figures", {}).items():
            label = _EVAL_LABELS.get(key, (key, key))[0]
            rows.append((f"{label} ({kind})", _fmt(value), command))
            if (mean := _mean(value)) is not None:
                results.append((_EVAL_LABELS.get(key, (key, key))[1], key, float(mean)))
    eval_results = [
        EvalResult(
            task_type="text-generation",
            dataset_type=dataset_type,
            dataset_name=cfg.data.dataset,
            metric_type=metric,
            metric_name=name,
            metric_value=value,
        )
        for metric, name, value in results
    ]
    tags = ["ldlm", "latent-diffusion", "text-diffusion", cfg.recipe, *([f"arxiv:{arxiv}"] if arxiv else [])]
    data = ModelCardData(
        library_name="ldlm",
        license=LICENSE,
        language="en",
        pipeline_tag="text-generation",
        tags=list(dict.fromkeys(tags)),
        datasets=datasets or None,
        base_model=hub_name(cfg.encoder.name),
        metrics=sorted({m for m, _, _ in results}) or None,
        model_name=cfg.name,
        eval_results=eval_results or None,
    )
    return ModelCard.from_template(data, template_str=_TEMPLATE, **_body(cfg, summary, paper, rows, model_ref))


def _body(cfg: RunConfig, summary: dict, paper: str, rows: list, model_ref: str) -> dict[str, str]:
    """The template's text fields."""
    stages = _stages(cfg)
    steps = ", ".join(f"{n.removesuffix('_train')} {s:,} steps (batch {getattr(cfg, n).batch_size})" for n, s in stages)
    data = f"`{cfg.data.dataset}` (text field `{cfg.data.text_field}`)"
    if cfg.data.max_texts:
        data += f", a seeded subset of {cfg.data.max_texts:,} texts"
    extras = [*cfg.data.train_extra, *cfg.data.autoencoder_extra]
    if extras:
        data += "; extra: " + ", ".join(f"`{e}`" for e in extras)
    counts = [
        f"{_int(summary[k])} {k.removesuffix('_texts')} texts" for k in ("train_texts", "valid_texts") if k in summary
    ]
    if "train_minutes" in summary:
        counts.append(f"{summary['train_minutes']:.1f} training minutes")
    if cfg.recipe == "seq2seq" and cfg.seq2seq.init_from:
        counts.append(f"initialised from `{cfg.seq2seq.init_from}`")
    figures = "\n".join(f"| {label} | {value} | `{cmd}` |" for label, value, cmd in rows)
    if not figures:
        figures = "| (none yet) | | run `ldlm evaluate` on the model |"
    use = (
        "from ldlm.pipeline import load_model\n\n"
        f'model = load_model("{model_ref}")  # local directory or hub id (revision=..., token=...)\n'
        + (
            'print(model.generate(sources=["a source text"]))'
            if cfg.recipe == "seq2seq"
            else "print(model.generate(4, seed=0))"
        )
    )
    return {
        "name": cfg.name,
        "recipe": cfg.recipe,
        "paper": paper,
        "highlights": "\n".join(f"| {k} | {v} |" for k, v in _highlights(cfg)),
        "data": data,
        "steps": steps or "none recorded",
        "counts": ", ".join(counts) or "no run summary found",
        "figures": figures,
        "use": use,
        "model_ref": model_ref,
        "encoder": cfg.encoder.name,
    }


_TEMPLATE = """---
{{ card_data }}
---

# {{ name }}

A latent diffusion language model trained with the `ldlm` library, recipe **{{ recipe }}**: {{ paper }}.

Only the trained parts are stored here (`model.safetensors`, with `config.json`, the full run config). The frozen
encoder `{{ encoder }}` is referenced by name (see `base_model`) and loaded from its own source; its weights are
never copied into this repository.

## Use

```python
{{ use }}
```

```bash
ldlm sample {{ model_ref }} -n 8
ldlm evaluate {{ model_ref }}
```

## Configuration

| | |
|---|---|
{{ highlights }}

## Training

- data: {{ data }}
- stages: {{ steps }}
- run: {{ counts }}

## Results

Each figure with the command that reproduces it (`ldlm train` retrains the run from its resolved config).

| figure | value | command |
|---|---|---|
{{ figures }}
"""


def render_card(model_dir: str | Path, *, model_ref: str | None = None, cfg: RunConfig | None = None) -> str:
    """The card text of the saved model in ``model_dir`` (commands name ``model_ref``, default the directory);
    ``cfg``: its config when ``config.json`` is not written yet."""
    model_dir = Path(model_dir)
    cfg = cfg or config_from_dict(json.loads((model_dir / CONFIG_NAME).read_text()))
    card = build_card(
        cfg, find_summary(model_dir), read_evaluations(model_dir), model_ref=model_ref or local_ref(model_dir)
    )
    return str(card)


def local_ref(model_dir: Path) -> str:
    """How commands name a local model: its run directory when it is one's ``model/``."""
    return str(model_dir.parent if model_dir.name == "model" else model_dir)


def write_card(model_dir: str | Path, *, model_ref: str | None = None) -> Path:
    """(Re)write ``model_dir/README.md`` atomically; returns its path."""
    path = Path(model_dir) / CARD_NAME
    atomic_write_text(path, render_card(model_dir, model_ref=model_ref))
    return path
