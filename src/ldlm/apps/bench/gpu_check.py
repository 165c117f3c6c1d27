"""GPU check (issue 23): training step time, peak memory and tokens/s of the paper-sized presets, and the sampling
bench at batch 512, in one command that fits 10 minutes on one H100 (``scripts/gpu_check.sh``).

    HF_HUB_OFFLINE=1 python -m ldlm.apps.bench.gpu_check --out results/gpu_check.json   # the full check (CUDA)
    python -m ldlm.apps.bench.gpu_check --smoke --out /tmp/gpu_check.json               # tiny sizes, fp32, CPU: seconds

Training rows: each paper preset's stage (COSMOS ``cosmos_roc_n16`` / ``cosmos_roc_n128`` stage 1 and stage 2,
LDLM ``ldlm_lm1b`` / ``ldlm_owt`` joint stage) trains through the real :class:`~ldlm.training.train.Trainer` (AdamW,
clipping, EMA, bf16 autocast, ``<stage>_train.compile``) for ``warmup + steps`` steps from the middle of its stage, as
:mod:`ldlm.apps.bench.throughput` does, on one synthetic batch of the preset's shapes held on the device: token ids and
random features h (the preset's ``data.cache_features``; uncached rows run E_h on the ids) or standard-normal latents
for stage 2. Nothing is downloaded: E_h is a random-weight model of the pretrained encoder's shape
(:class:`StandInEncoder`), so speed and memory are those of the real run without its input pipeline (the batch is
already on the device). A batch that runs out of GPU memory is halved until it fits (``min_batch``); the sizes that
did not fit are recorded. ``torch.compile`` rows compile the denoiser, as ``train.compile`` does (stage 1 has none).

Bench row: :func:`ldlm.apps.bench.benchmarks.bench_sampling` and
:func:`~ldlm.apps.bench.benchmarks.bench_step_cost` (``ldlm bench``'s latent-sampling vs GPT-2 and step-cost rows) at
batch 512 on the device in bf16.

Every item is measured on its own: an error (out of memory, a compile failure) is recorded as a string and the next
item runs; past the time budget the remaining items are skipped with a note. The JSON is rewritten (atomically)
after every item, so a run cut short still leaves the items it finished.
"""

from __future__ import annotations

import atexit
import dataclasses
import gc
import logging
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

from ldlm.apps.bench.benchmarks import BenchConfig, bench_sampling, bench_step_cost, machine_info
from ldlm.apps.bench.throughput import FAR, timed_fit
from ldlm.config import RunConfig, load_config
from ldlm.model.encoders import TokenEncoder, _drop_unused_layers
from ldlm.pipeline import LatentDiffusionLM
from ldlm.storage.io import atomic_write_json

log = logging.getLogger(__name__)

# Pretrained encoders of the presets: (transformers model_type, config fields) of the same shape, random weights.
ENCODER_SHAPES: dict[str, tuple[str, dict]] = {
    "bert-base-uncased": ("bert", {}),  # COSMOS: 12 layers, hidden 768, vocab 30522
    "gpt2": ("gpt2", {}),  # LDLM: 12 layers, hidden 768, vocab 50257, 1024 positions
    "minilm-l6": ("bert", {"hidden_size": 384, "num_hidden_layers": 6, "intermediate_size": 1536}),  # CPU presets
}
GIB = 2**30


class BudgetExceeded(RuntimeError):
    """The check's time budget ran out in the middle of an item."""


@dataclasses.dataclass(frozen=True)
class CheckItem:
    """One training measurement: a preset's stage, eager or compiled, features cached or not (None: the preset's)."""

    preset: str
    stage: str  # autoencoder | diffusion | joint
    compile: bool = False
    cached: bool | None = None

    @property
    def name(self) -> str:
        cache = "" if self.cached is None else ("_cached" if self.cached else "_uncached")
        return f"{self.preset}_{self.stage}{cache}{'_compiled' if self.compile else ''}"


BENCH = "bench"  # the name of the bench item in ``CheckConfig.order``

_EAGER = (
    CheckItem("cosmos_roc_n16", "autoencoder"),
    CheckItem("cosmos_roc_n16", "diffusion"),
    CheckItem("cosmos_roc_n128", "autoencoder"),
    CheckItem("cosmos_roc_n128", "diffusion"),
    CheckItem("ldlm_lm1b", "joint"),
    CheckItem("ldlm_owt", "joint"),
)
_COMPILED = tuple(dataclasses.replace(item, compile=True) for item in _EAGER if item.stage != "autoencoder")


@dataclasses.dataclass
class CheckConfig:
    """What one check runs: ``order`` lists :class:`CheckItem` s and :data:`BENCH`, cheapest-first in value."""

    order: tuple[CheckItem | str, ...] = (*_EAGER, BENCH, *_COMPILED)  # eager rows first: compile is the extra
    steps: int = 50
    warmup: int = 5  # untimed steps first (compilation happens here)
    budget_s: float = 540.0  # past it, items are skipped (a running item stops at its next step)
    bench_min_s: float = 150.0  # the bench (not interruptible) starts only with this much budget left
    min_batch: int = 8  # out of memory: halve the batch down to this size
    precision: str = "bf16"  # the trainer's mixed_precision: bf16 | no
    bench: BenchConfig = dataclasses.field(
        default_factory=lambda: dataclasses.replace(BenchConfig(), batch=512, repeats=2, bf16=True)
    )
    smoke: bool = False

    @classmethod
    def smoke_config(cls) -> CheckConfig:
        """Tiny presets, fp32, a few steps: seconds on a CPU (the GPU check's plumbing, not its figures)."""
        order = (
            CheckItem("tiny", "autoencoder", cached=True),
            CheckItem("tiny", "diffusion", compile=True),  # on CPU train.compile warns and runs eagerly
            CheckItem("ldlm_tiny", "joint", cached=False),  # runs the stand-in E_h on the ids
            BENCH,
        )
        return cls(order=order, steps=3, warmup=1, budget_s=120.0, bench_min_s=0.0, min_batch=2, precision="no",
                   bench=BenchConfig.smoke_config(), smoke=True)  # fmt: skip


# ----------------------------------------------------------------------------------------- stand-in E_h


class StandInEncoder(TokenEncoder):
    """A frozen E_h of a pretrained encoder's shape with random weights: same layers, width, vocabulary and cost,
    no download and no tokenizer (it reads ids, never texts). ``forward(input_ids, attention_mask) -> h: (B, L, D)``
    of ``layer``, with the layers after it dropped, as :class:`~ldlm.model.encoders.FrozenEncoder` does."""

    def __init__(self, name: str, layer: int):
        from transformers import AutoConfig, AutoModel

        if name not in ENCODER_SHAPES:
            raise ValueError(f"no stand-in shape for encoder {name!r}: known {', '.join(ENCODER_SHAPES)}")
        nn.Module.__init__(self)  # TokenEncoder.__init__ would load the tokenizer
        model_type, fields = ENCODER_SHAPES[name]
        model = AutoModel.from_config(AutoConfig.for_model(model_type, **fields))
        self.name, self.layer, self.hidden_size = name, layer, model.config.hidden_size
        self._vocab = model.config.vocab_size
        num_layers = model.config.num_hidden_layers
        self._index = layer % (num_layers + 1)
        self.kept_layers = _drop_unused_layers(model, num_layers, keep=min(self._index + 1, num_layers))
        self.model = model.eval().requires_grad_(False)
        self.register_buffer("mean", torch.zeros(self.hidden_size))
        self.register_buffer("std", torch.ones(self.hidden_size))

    @property
    def vocab_size(self) -> int:
        return self._vocab

    def train(self, mode: bool = True) -> StandInEncoder:  # frozen: always eval
        return super().train(False)

    @torch.no_grad()
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        return out.hidden_states[self._index].float()


# ----------------------------------------------------------------------------------------- one training row


def _item_config(item: CheckItem) -> RunConfig:
    overrides = [] if item.cached is None else [f"data.cache_features={str(item.cached).lower()}"]
    return load_config(item.preset, overrides)


def build_model(item: CheckItem) -> tuple[RunConfig, LatentDiffusionLM]:
    """The preset's config and a fresh model on a stand-in E_h (build under ``torch.device('meta')`` to plan)."""
    cfg = _item_config(item)
    if item.stage not in ("autoencoder", "diffusion", "joint"):
        raise ValueError(f"stage={item.stage!r} is unknown: use autoencoder | diffusion | joint")
    return cfg, LatentDiffusionLM(cfg, encoder=StandInEncoder(cfg.encoder.name, cfg.encoder.layer))


def _task(item: CheckItem, model: LatentDiffusionLM, cfg: RunConfig) -> nn.Module:
    from ldlm.objectives.autoencoder import AutoencoderTask
    from ldlm.objectives.diffusion import DiffusionTask
    from ldlm.objectives.joint import JointTask

    if item.stage == "autoencoder":
        return AutoencoderTask(model, cfg.seed)
    if item.stage == "diffusion":
        return DiffusionTask(model, cfg.seed)
    return JointTask(model, cfg, cfg.seed)


def synthetic_batch(item: CheckItem, model: LatentDiffusionLM, batch_size: int, device: torch.device) -> dict:
    """One batch of the stage's shapes on ``device``: z (B, N, d); or ids/mask (B, L) [+ raw h (B, L, D) if cached]."""
    g = torch.Generator(device).manual_seed(0)
    if item.stage == "diffusion":
        return {"z": torch.randn(batch_size, *model.latent_shape, generator=g, device=device)}
    shape = (batch_size, model.max_length)
    batch = {
        "input_ids": torch.randint(model.encoder.vocab_size, shape, generator=g, device=device),
        "attention_mask": torch.ones(shape, dtype=torch.long, device=device),
    }
    if model.cfg.data.cache_features:
        batch["h"] = torch.randn(*shape, model.encoder.hidden_size, generator=g, device=device)
    return batch


def _repeat_until(batch: dict, deadline: float) -> Iterator[dict]:
    while True:
        if time.perf_counter() > deadline:
            raise BudgetExceeded("time budget exceeded during this item")
        yield batch


def _log_dir() -> str:
    """A scratch directory for the trainer's logs, removed at exit: a fit stopped by an exception leaves its
    TensorBoard writer thread open, which must not find its directory gone."""
    path = tempfile.mkdtemp(prefix="ldlm_gpu_check_")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def _params(module: nn.Module, trainable: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable)


def train_steps(item: CheckItem, model: LatentDiffusionLM, cfg: RunConfig, c: CheckConfig, batch_size: int,
                deadline: float) -> dict:  # fmt: skip
    """``c.warmup + c.steps`` trainer steps of ``item`` at ``batch_size`` from the middle of the stage; timings."""
    from ldlm.training.train import Trainer

    stage = getattr(cfg, f"{item.stage}_train")
    at = stage.steps // 2
    tc = dataclasses.replace(
        stage, steps=at + c.warmup + c.steps + 1, batch_size=batch_size, grad_accum=1, log_every=FAR,
        eval_every=FAR, save_every=0, compile=item.compile, mixed_precision=c.precision, on_nonfinite="skip",
    )  # fmt: skip
    task = _task(item, model, cfg)
    stamps: list[float] = []
    trainer = Trainer(task, tc, log_dir=_log_dir(), name=item.stage, progress=False, resume=False)
    model.to(trainer.device)
    batch = synthetic_batch(item, model, batch_size, trainer.device)
    before, peak = timed_fit(trainer, _repeat_until(batch, deadline), at, stamps)
    skipped = sum(1 for row in trainer.history if "skipped" in row)
    steps = [b - a for a, b in zip(stamps[:-1], stamps[1:], strict=True)]  # step k: stamps[k] -> stamps[k + 1]
    timed = steps[c.warmup : c.warmup + c.steps]
    median = statistics.median(timed)
    row = {
        "batch_size": batch_size,
        "at_step": at,
        "warmup_steps": c.warmup,
        "steps": len(timed),
        "warmup_seconds": sum(steps[: c.warmup]),
        "step_seconds": median,
        "step_seconds_mean": statistics.fmean(timed),
        "step_seconds_min": min(timed),
        "step_seconds_max": max(timed),
        "samples_per_s": batch_size / median,
        "tokens_per_s": batch_size * model.max_length / median,
        "trainable_params": _params(task, trainable=True),
        "compiled": bool(getattr(model.denoiser, "_ldlm_compiled", False)) and hasattr(task, "denoiser"),
        "skipped_steps": skipped,
        "rss_before_gib": before,
        "peak_rss_gib": peak,
    }
    if trainer.device.type == "cuda":
        row["cuda_peak_allocated_gib"] = torch.cuda.max_memory_allocated() / GIB
        row["cuda_peak_reserved_gib"] = torch.cuda.max_memory_reserved() / GIB
    return row


def _release(compiled: bool) -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if compiled:
        torch._dynamo.reset()


def measure_item(item: CheckItem, c: CheckConfig, deadline: float, start_batch: int | None = None) -> dict:
    """One training row: the preset's batch (or ``start_batch``), halved on out-of-memory down to ``c.min_batch``."""
    torch.manual_seed(0)
    cfg, model = build_model(item)
    preset_batch = getattr(cfg, f"{item.stage}_train").batch_size
    row = {
        "preset": item.preset,
        "recipe": cfg.recipe,
        "stage": item.stage,
        "compile": item.compile,
        "precision": c.precision,
        "feature_cache": None if item.stage == "diffusion" else cfg.data.cache_features,
        "preset_batch_size": preset_batch,
        "max_length": model.max_length,
        "latent_shape": list(model.latent_shape),
        "params": {part: _params(getattr(model, part)) for part in ("encoder", "autoencoder", "denoiser")},
        "out_of_memory_batch_sizes": [],
    }
    batch = start_batch or preset_batch
    while True:
        try:
            row.update(train_steps(item, model, cfg, c, batch, deadline))
            return row
        except torch.OutOfMemoryError:
            row["out_of_memory_batch_sizes"].append(batch)
            if batch // 2 < c.min_batch:
                raise
        # out of the except block, the failed step's frames (activations, optimiser, EMA) are gone: free them
        model.zero_grad(set_to_none=True)
        _release(item.compile)
        batch //= 2


def measure_bench(c: BenchConfig) -> dict:
    """``ldlm bench``'s sampling (latent vs GPT-2) and step-cost rows at ``c.batch`` on ``c.device``."""
    sampling = bench_sampling(c)
    ratios = {f"latent_over_ar_time_L{r['length']}": r["latent_s"] / r["ar_s"] for r in sampling["rows"]}
    return {
        "batch": c.batch,
        "device": c.device,
        "bf16": c.bf16,
        "sampling_steps": c.steps,
        "sampling": sampling,
        **ratios,
        "step_cost": bench_step_cost(c),
        "config": dataclasses.asdict(c),
    }


# ----------------------------------------------------------------------------------------- the check


def _device_info() -> dict:
    info = machine_info()
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(device=torch.cuda.get_device_name(0), cuda=torch.version.cuda,
                    gpu_memory_gib=props.total_memory / GIB, gpu_count=torch.cuda.device_count())  # fmt: skip
    else:
        info.update(device=f"cpu: {info['cpu_model']}", cuda=None, gpu_memory_gib=None, gpu_count=0)
    return info


NOTES = {
    "training": "real Trainer (AdamW, clipping, EMA, autocast per `precision`), warmup_steps untimed then `steps` "
    "timed from the middle of the stage (at_step); one synthetic batch of the preset's shapes held on the device "
    "(no input pipeline); frozen E_h = random weights of the pretrained encoder's shape; step_seconds is the "
    "median; tokens_per_s = batch_size * max_length / step_seconds (text tokens per second; for stage 2 the tokens "
    "its latents stand for); cuda_peak_allocated_gib = torch.cuda.max_memory_allocated over the loop (model, EMA, "
    "optimiser state and activations); out_of_memory_batch_sizes: batches that did not fit, halved until one did",
    "compile": "compile=true: `<stage>_train.compile`, torch.compile of the denoiser (after the EMA copy); stage 1 "
    "has no denoiser; warmup_seconds holds the compilation",
    "bench": "ldlm.apps.bench.benchmarks bench_sampling + bench_step_cost (random weights: speed only) at `batch` on "
    "the device under bf16 autocast; latent_over_ar_time_L* < 1: latent sampling faster than GPT-2 with KV cache",
}


def _error(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}"
    return text if len(text) <= 2000 else text[:2000] + " ..."


def run_check(
    out: str | Path,
    c: CheckConfig | None = None,
    *,
    only: tuple[str, ...] = (),
    measure: Callable[..., dict] = measure_item,
) -> dict:
    """Run every item of ``c.order`` (those named in ``only``, if given) within ``c.budget_s``; write ``out``.

    Each item's entry has ``name``, ``kind`` (training | bench), ``status`` (ok | error | skipped), ``seconds``,
    and its figures, or ``error`` / ``note``. ``measure`` is :func:`measure_item` (a seam for tests)."""
    c = c or CheckConfig()
    out = Path(out)
    start = time.perf_counter()
    deadline = start + c.budget_s
    device = "cuda" if torch.cuda.is_available() else "cpu"
    bench = dataclasses.replace(c.bench, device=device, bf16=c.bench.bf16 and device == "cuda")
    order = [x for x in c.order if not only or (x if isinstance(x, str) else x.name) in only]
    config = {
        "steps": c.steps, "warmup": c.warmup, "budget_s": c.budget_s, "precision": c.precision,
        "min_batch": c.min_batch, "smoke": c.smoke, "order": [x if isinstance(x, str) else x.name for x in order],
    }  # fmt: skip
    result = {"config": config, "machine": _device_info(), "items": [], "notes": NOTES, "complete": False}
    fitted: dict[tuple[str, str], int] = {}  # (preset, stage) -> the batch that fitted (compiled rows start there)
    for item in order:
        name = item if isinstance(item, str) else item.name
        entry = {"name": name, "kind": "bench" if isinstance(item, str) else "training"}
        left = deadline - time.perf_counter()
        if left <= 0 or (isinstance(item, str) and left < c.bench_min_s):
            entry.update(status="skipped", note=f"time budget: {max(left, 0):.0f} s of {c.budget_s:.0f} s left")
        else:
            t0 = time.perf_counter()
            try:
                if isinstance(item, str):
                    entry.update(measure_bench(bench))
                else:
                    entry.update(measure(item, c, deadline, fitted.get((item.preset, item.stage))))
                    fitted[(item.preset, item.stage)] = entry["batch_size"]
                entry["status"] = "ok"
            except BudgetExceeded as err:
                entry.update(status="skipped", note=str(err))
            except Exception as err:  # one item's failure (OOM, compile error) must not stop the others
                log.exception("gpu check: %s failed", name)
                entry.update(status="error", error=_error(err))
            entry["seconds"] = time.perf_counter() - t0
            _release(not isinstance(item, str) and item.compile)
        result["items"].append(entry)
        result["total_seconds"] = time.perf_counter() - start
        atomic_write_json(out, result)  # after every item: a run cut short keeps what it finished
        log.info("gpu check: %s %s (%.0f s elapsed)", name, entry["status"], result["total_seconds"])
    result["complete"] = True
    atomic_write_json(out, result)
    return result


def main(argv: list[str] | None = None) -> int:
    """``python -m ldlm.apps.bench.gpu_check``: the ``ldlm gpu-check`` verb."""
    from ldlm.cli import main as cli_main

    return cli_main(["gpu-check", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
