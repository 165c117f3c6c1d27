"""Typed run configuration: dataclasses with the papers' values as defaults, YAML presets, dotted overrides.

A preset is a YAML file in ``configs/`` (or any path). It may name ``base: other_preset`` to inherit and
override. On the command line ``train.lr=1e-4`` style overrides are applied last. Every key is
validated against the dataclass fields, so a typo fails before any training with the field's name.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ldlm.storage.io import read_yaml_mapping

CONFIG_DIR = Path(__file__).parent / "configs"
# the keys of ldlm.sampling.samplers.SAMPLERS (importing ldlm.diffusion here would be circular; a test checks them)
SAMPLER_NAMES = ("euler", "euler_maruyama", "ddim", "ddpm", "dpmpp_2m")
TIME_GRID_NAMES = ("auto", "uniform", "logsnr", "edm")  # ldlm.sampling.samplers.TIME_GRIDS, likewise


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message names the field and the fix."""


@dataclass
class EncoderConfig:
    """Token encoder E_h (COSMOS: frozen BERT-base, last layer; LDLM: frozen GPT-2, layer -3)."""

    name: str = "minilm-l6"  # short name (ldlm.storage.resources), local path or hub id
    layer: int = -1
    # frozen: hidden_states[layer] of the pretrained model `name`. trainable_embeddings: Emb_theta, token embeddings
    # over `name`'s tokenizer learned from scratch in the LDLM joint stage (LDLM Table 1 token encoder, Table 2).
    kind: str = "frozen"
    max_length: int = 64  # L: tokens per text including special tokens
    stats_texts: int = 2048  # texts used to estimate the per-feature mean/std of h
    # Decoder-only encoders (GPT-2, Llama): run E_h on [BOS] + w and drop BOS from h, so the attention sink of
    # position 0 does not swallow the first token (not in the papers; off in their presets).
    prefix_bos: bool = False


@dataclass
class DataConfig:
    # registry name (rocstories, news, wikipedia, ...), hub:owner/name[:config] (any `datasets` hub dataset), a local
    # .jsonl/.txt/.csv/.parquet/.arrow file or a directory written by datasets' save_to_disk
    dataset: str = "news"
    text_field: str = "text"  # column / JSON field holding the text (local files and datasets)
    max_texts: int | None = None  # seeded subset of the dataset (None: all)
    validation_size: float = 0.1  # fraction (<1) or count (>=1) held out, split by `seed`
    # Extra texts for the autoencoder stage only (COSMOS trains its autoencoder on Wikipedia and the
    # diffusion model on ROCStories): registry names or paths, each optionally capped by extra_max_texts.
    autoencoder_extra: list[str] = field(default_factory=list)
    extra_max_texts: int | None = None  # seeded subset of each autoencoder_extra / train_extra source (None: all)
    # Extra training texts for every stage (e.g. rocstories-40k beside rocstories): added to the training split
    # after it is drawn, so the held-out split of `dataset` stays the same; texts equal to a held-out one are dropped.
    train_extra: list[str] = field(default_factory=list)
    # Beyond the paper (COSMOS recipe): train the diffusion stage only on texts that fill all
    # encoder.max_length positions. Padding rows teach the autoencoder "after the end" latents, and the
    # sampler then tends to stop between text and padding latents (short or empty samples).
    diffusion_full_window: bool = False
    cache_features: bool = True  # cache frozen-encoder features on disk (h is deterministic)
    # MDLM protocol (LDLM App. C): tokenise without special tokens, concatenate with EOS separators and cut
    # chunks of encoder.max_length tokens, no padding. False: one padded row per text (COSMOS).
    packing: bool = False
    # Corpora larger than memory (LDLM recipe, packing): read the dataset as a stream (hub: datasets streaming;
    # local files: line by line), hold out its first validation_size texts, tokenise the next max_texts (None: all)
    # once into a token file that training reads row by row; E_h runs on the fly (no feature cache).
    streaming: bool = False
    split: str = "train"  # the hub split a stream reads
    seed: int = 0


@dataclass
class AutoencoderConfig:
    """Perceiver compressor (L -> N) / decompressor (N -> L) and token head, COSMOS Sec. 4."""

    num_latents: int = 16  # N
    width: int = 768  # d of the Perceiver blocks
    latent_dim: int | None = None  # channels of z (None: width; COSMOS keeps the encoder's width)
    encoder_blocks: int = 12
    decoder_blocks: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    # Engineering beyond the paper (0 = off): learnable additive attention bias initialised with a
    # locality prior (latent i <-> its contiguous chunk of positions). Makes small CPU models train.
    locality_bias: float = 0.0
    # Losses: CE(w, w_hat) + MSE(h, h_hat) [+ kl_weight * KL for the VAE variant, Appendix D.1]
    ce_weight: float = 1.0
    mse_weight: float = 1.0
    kl_weight: float = 0.0  # beta; > 0 turns on the variational encoder (paper: 0.01 best, >= 0.1 hurts)
    # Activation perturbations, one per batch with equal probability (Sec. 4.2.2)
    mask_prob: float = 0.3  # (a) share of the L vectors of h set to zero
    noise_delta: float = 0.7  # (b) h' = delta h + sqrt(1 - delta^2) eps
    latent_dropout: float = 0.4  # zero this share of individual features of z
    augment_start_step: int = 0  # CPU engineering: switch augmentations on late ...
    augment_ramp_steps: int = 0  # ... and ramp their strength linearly from 0 to the paper value
    # Token head D_w (vocabulary = the frozen encoder's tokenizer)
    head_init: str = "random"  # random | centroid (class means of h: a strong start for a linear head)
    head_pretrain_steps: int = 0  # steps of CE on the true h before autoencoder training
    freeze_head_steps: int = 0  # keep the (pre-trained) head fixed for this many steps (-1: always)
    ce_positions: int = 0  # CE on this many random real positions per batch (0: all)
    ce_negatives: int = 0  # sampled softmax: batch targets + this many random classes (0: full vocab)
    # LDLM additions (defaults keep COSMOS unchanged)
    # perceiver (LDLM default) | self_attention (App. B.4: N must equal L) | identity (no E_z/D_h: z = h, N = L,
    # d = the encoder's hidden size; diffusion on the frozen features, TEncDM-like: LDLM Table 2, COSMOS Table 3)
    latent_encoder: str = "perceiver"
    token_decoder_layers: int = 0  # transformer layers of D_w before its linear head (LDLM: 3; App. B.2: 1-6)
    token_decoder_heads: int = 12  # heads of those layers (must divide the encoder's hidden size)
    vocab_size: int | None = None  # D_w vocabulary; None: the encoder tokenizer's (anything else is an error)
    # Beyond the papers (issue 22): layernorm = each latent vector z_i standardised over its d channels (no affine),
    # so neither the diffusion loss (which rewards small z) nor L_h under sigma_dec noise (large z) can set z's
    # scale: sigma_dec becomes a fixed per-channel SNR of 1/sigma_dec^2. none: E_z's raw output (both papers).
    latent_norm: str = "none"  # none | layernorm


@dataclass
class DiffusionConfig:
    """Gaussian diffusion in latent space (COSMOS App. C.1; LDLM Sec. 4)."""

    schedule: str = "tan"  # tan: alpha_t = 1 / (1 + d^2 tan^2(pi t / 2))
    schedule_d: float = 5.0  # d (COSMOS Table 7: ROCStories 5, Wikipedia 3, XSum/SQuAD 7, ParaDetox 9)
    t_max: float = 0.999  # clip t below 1, where tan blows up
    denoiser: str = "transformer"  # transformer (COSMOS) | dit (adaLN-Zero, LDLM)
    layers: int = 12
    width: int = 768
    heads: int = 12
    mlp_ratio: float = 4.0
    self_condition_prob: float = 0.5
    # Beyond the papers (Karras et al. 2022, EDM): x0_hat = c_skip z_t + c_out F(c_in z_t), with unit-variance
    # latents c_skip = sqrt(alpha), c_out = sqrt(1 - alpha), c_in = 1 (F predicts -v), so x0_hat -> z_t as t -> 0
    # and the fine end of the trajectory starts from the identity. none: F is x0_hat itself (both papers).
    preconditioning: str = "none"  # none | edm
    timestep_sampler: str = "uniform"  # uniform (COSMOS) | adaptive (LDLM Sec. 5.3)
    adaptive_bins: int = 100  # equal bins of [0, t_max] for the adaptive sampler
    adaptive_refresh_every: int = 5000  # recompute the bin probabilities every this many updates
    adaptive_ema_decay: float = 0.99  # per-update decay of the loss sums at the bin edges (memory ~1/(1-decay) updates)
    # Beyond the paper (m = 0): draw t from (1-m) p + m uniform. Without a floor a bin whose p reaches 0 is never
    # drawn again, so its loss is never re-estimated (issue 21: t < 0.2 starved for good).
    adaptive_uniform_mix: float = 0.05
    adaptive_start: int = 0  # updates of uniform t before the first refresh (0: the first refresh at refresh_every)


@dataclass
class JointConfig:
    """LDLM joint training (LDLM Sec. 4-5, App. A.2, B.2): L = L_diff + L_h + L_w."""

    sigma_dec: float = 3.0  # decoder-input noise z~0 = z0 + sigma_dec eps, training only (Table 1: 3 best)
    # Which reconstruction losses shape the latent encoder (Table 1): mse = L_h, with L_w on sg(h_hat) (paper);
    # ce = L_w without stop-gradient and no L_h; ce+mse = L_h + L_w without stop-gradient.
    reconstruction: str = "mse"
    warmup_steps: int = 25_000  # S_wu of the diffusion-to-encoder warmup (App. A.2); 0 = no warmup
    warmup_k: float = 10.0  # steepness k of the normalised sigmoid
    warmup_c: float = 0.8  # midpoint c (fraction of S_wu)
    gamma_min: float = 0.0  # gamma(0) (the paper: "gamma_min ~ 0")
    skip_token_decoder: bool = False  # no L_w during joint training; D_w is post-trained (App. B.2)
    # Post-training (App. B.2) decodes h_hat from z0 + sigma_dec eps; this fraction of each batch's texts is decoded
    # from the clean z0 instead, so that D_w also learns the clean h_hat it reads at evaluation (0 = the paper).
    decoder_clean_fraction: float = 0.0
    # lambda_h in L = L_diff + lambda_h L_h + L_w. Eq. 1-2 are squared norms over z (N x d) and h (L x D); the code
    # takes means, so None (auto) = (L*D)/(N*d) keeps the paper's balance: 1 at its N = L, d = D, 4.5 in ldlm_quick.
    hidden_weight: float | None = None


@dataclass
class TrainConfig:
    """Optimisation of one stage (COSMOS Table 7 values as defaults)."""

    steps: int = 200_000
    batch_size: int = 1024  # global batch
    grad_accum: int = 1
    lr: float = 2e-4
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-8
    weight_decay: float = 0.01
    warmup_steps: int = 1000
    lr_schedule: str = "constant"  # constant | cosine (after warmup)
    min_lr_ratio: float = 0.1  # cosine floor as a fraction of lr
    grad_clip: float = 1.0
    ema_decay: float = 0.9999
    ema_update_after: int = 100
    eval_every: int = 1000
    log_every: int = 50
    save_every: int = 10_000
    keep_checkpoints: int = 2  # the newest K checkpoints are kept (a damaged newest one falls back to the previous)
    # Wall-clock budget of the stage in minutes (None: none): the stage ends after the first step past it, with a
    # final evaluation, as if `steps` were reached (LR schedules still span `steps`). For equal-time comparisons.
    max_minutes: float | None = None
    on_nonfinite: str = "stop"  # a non-finite loss or gradient norm: stop the run | skip the step (both reported)
    eval_batches: int = 8
    mixed_precision: str = "auto"  # auto: bf16 on GPU, fp32 on CPU | no | bf16 | fp16
    num_workers: int = 0
    compile: bool = False  # torch.compile the stage's denoiser (GPU only; on CPU: a warning, eager)


@dataclass
class SampleConfig:
    # euler (probability-flow ODE, COSMOS) | euler_maruyama, ddpm (reverse SDE, LDLM) | ddim | dpmpp_2m (2nd-order ODE)
    sampler: str = "euler"
    steps: int = 200
    num_samples: int = 16
    batch_size: int = 64
    seed: int = 0
    compile: bool = False  # torch.compile the denoiser for sampling (GPU only; on CPU: a warning, eager)
    mixed_precision: str = "auto"  # denoiser calls: auto (bf16 autocast on GPU, fp32 on CPU) | no | bf16
    # times of the denoiser calls: auto (dpmpp_2m: logsnr; every other sampler: uniform) | uniform (in t, down to 0) |
    # logsnr (uniform in log-SNR down to alpha = 1/(1 + 1e-4), then 0) | edm (Karras rho=7 in sigma, same ends)
    time_grid: str = "auto"
    lower_order_final: bool = False  # dpmpp_2m: first-order last step before the final x0 (DPM-Solver++)


@dataclass
class Seq2SeqConfig:
    """Conditional generation (COSMOS App. C.1): source latents -> transformer encoder -> cross-attention in the
    denoiser. Used by ``recipe: seq2seq``; targets have ``encoder.max_length`` tokens, sources their own length."""

    source_max_length: int = 512  # source tokens (longer ones are truncated); encoded in encoder.max_length windows
    source_template: str | None = None  # a row -> source text, e.g. "{answer} [SEP] {context}"; None: dataset default
    target_field: str | None = None  # the row's target field; None: the dataset's default
    encoder_layers: int = 12  # transformer encoder over the source latents (paper: 12)
    init_from: str | None = None  # unconditional model to start from: save_pretrained dir, run dir or hub id
    condition_dropout: float = 0.0  # classifier-free guidance (beyond the paper): drop the source for this share
    guidance_scale: float = 1.0  # x0 = uncond + w (cond - uncond): 1 = conditional only (paper), 0 = unconditional
    num_candidates: int = 1  # MBR decoding: k candidates per source, keep the one closest (BLEU) to the others


@dataclass
class ARConfig:
    """Autoregressive baseline (``recipe: ar``, issue 21): a decoder-only transformer (nanoGPT-like, the library's
    :class:`~ldlm.model.transformer.TransformerBlock` under a causal mask) over ``encoder.name``'s tokenizer and
    ``encoder.max_length`` tokens; the encoder network itself is not run. Trained in ``ar_train``."""

    layers: int = 12
    width: int = 768
    heads: int = 12
    mlp_ratio: float = 4.0
    tie_embeddings: bool = True  # the LM head is the token embedding (GPT-2)
    temperature: float = 1.0  # sampling defaults of generate(): softmax temperature ...
    top_p: float = 1.0  # ... and nucleus mass (1: plain ancestral sampling)


@dataclass
class RunConfig:
    name: str = "run"
    recipe: str = "cosmos"
    seed: int = 0
    output_dir: str = "runs/{name}"
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    data: DataConfig = field(default_factory=DataConfig)
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    autoencoder_train: TrainConfig = field(default_factory=TrainConfig)
    diffusion_train: TrainConfig = field(default_factory=TrainConfig)
    joint: JointConfig = field(default_factory=JointConfig)
    joint_train: TrainConfig = field(default_factory=TrainConfig)  # LDLM: the one joint stage
    # LDLM: post-training of a fresh token decoder on the frozen system (App. B.2); steps=0: none
    decoder_train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=0))
    sample: SampleConfig = field(default_factory=SampleConfig)
    seq2seq: Seq2SeqConfig = field(default_factory=Seq2SeqConfig)
    seq2seq_train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=0))  # the conditional stage
    ar: ARConfig = field(default_factory=ARConfig)
    ar_train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=0))  # recipe: ar, its one stage

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir.format(name=self.name))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------- building from dicts


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert ``value`` (from YAML or the CLI) to the annotated type ``tp``, or raise ConfigError."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0])
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        if origin is tuple:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} values, got {list(value)!r}")
            return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=False)))
        return [_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _looks_numeric(value):  # YAML 1.1 reads `1e-4` (no dot) as a string
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):  # `name=2024` on the CLI
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def from_dict(cls: type, data: dict[str, Any], where: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys with a suggestion."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        if key not in hints or key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown config key {path!r}.{hint} Valid keys here: {', '.join(names)}")
        kwargs[key] = _coerce(value, hints[key], path)
    return cls(**kwargs)


def _deep_merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def preset_path(name_or_path: str | Path) -> Path:
    """A preset by name (``configs/NAME.yaml``), an explicit YAML path or a run's ``config.json`` (JSON is YAML)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml", ".json") and path.exists():
        return path
    candidate = CONFIG_DIR / f"{path.stem if path.suffix else name_or_path}.yaml"
    if candidate.exists():
        return candidate
    known = list_presets()
    close = difflib.get_close_matches(str(name_or_path), known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"config {str(name_or_path)!r} not found.{hint} Presets: {', '.join(known)}")


def list_presets() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def _load_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    if path in seen:
        raise ConfigError(f"config inheritance cycle through {path}")
    data = read_yaml_mapping(path, ConfigError, "config keys")
    if not data:  # an empty file (or comments only) would silently train every default
        raise ConfigError(
            f"{path} is empty: write config keys (e.g. `base: quickstart`) or name a preset (ldlm configs)"
        )
    base = data.pop("base", None)
    if base is not None:
        data = _deep_merge(_load_yaml(preset_path(base), (*seen, path)), data)
    return data


def parse_override(item: str) -> dict:
    """``a.b.c=value`` -> ``{"a": {"b": {"c": value}}}`` with the value parsed as YAML (1e-4, true, [..])."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key.sub=value (e.g. autoencoder_train.lr=1e-4)")
    key, raw = item.split("=", 1)
    value = yaml.safe_load(raw) if raw.strip() else ""
    if isinstance(value, str) and _looks_numeric(value):
        value = float(value)
    out: dict = {}
    node = out
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def load_config(name_or_path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Load a preset (or defaults when None), apply dotted overrides, validate, return a RunConfig."""
    data = _load_yaml(preset_path(name_or_path)) if name_or_path else {}
    for item in overrides:
        data = _deep_merge(data, parse_override(item))
    cfg = from_dict(RunConfig, data)
    validate(cfg)
    return cfg


def config_from_dict(data: dict) -> RunConfig:
    cfg = from_dict(RunConfig, data)
    validate(cfg)
    return cfg


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def validate(cfg: RunConfig) -> None:
    """Cross-field checks that would otherwise fail deep inside training."""
    ae, diff, enc = cfg.autoencoder, cfg.diffusion, cfg.encoder
    _check(
        cfg.recipe in ("cosmos", "ldlm", "seq2seq", "ar"),
        f"recipe={cfg.recipe!r} is unknown: use 'cosmos', 'ldlm', 'seq2seq' or 'ar'",
    )
    _check(enc.max_length >= 4, f"encoder.max_length={enc.max_length} must be >= 4")
    _check(
        enc.kind in ("frozen", "trainable_embeddings"),
        f"encoder.kind={enc.kind!r}: use frozen | trainable_embeddings",
    )
    if enc.kind == "trainable_embeddings":
        _check(
            cfg.recipe == "ldlm",
            f"encoder.kind=trainable_embeddings trains E_h in the LDLM joint stage; recipe={cfg.recipe!r} reads "
            "frozen features: use recipe=ldlm or encoder.kind=frozen",
        )
        _check(
            cfg.joint.reconstruction == "ce",
            f"joint.reconstruction={cfg.joint.reconstruction!r} regresses h_hat onto h (L_h), which a trainable E_h "
            "can shrink to nothing: use joint.reconstruction=ce (LDLM Sec. 5.2 trains Emb_theta with CE)",
        )
        _check(not enc.prefix_bos, "encoder.prefix_bos=true needs encoder.kind=frozen (embeddings have no sink)")
    _check(1 <= ae.num_latents, f"autoencoder.num_latents={ae.num_latents} must be >= 1")
    _check(ae.width % ae.heads == 0, f"autoencoder.width={ae.width} must be divisible by heads={ae.heads}")
    _check(diff.width % diff.heads == 0, f"diffusion.width={diff.width} must be divisible by heads={diff.heads}")
    _check(0.0 <= ae.mask_prob < 1.0, f"autoencoder.mask_prob={ae.mask_prob} must be in [0, 1)")
    _check(0.0 < ae.noise_delta <= 1.0, f"autoencoder.noise_delta={ae.noise_delta} must be in (0, 1]")
    _check(0.0 <= ae.latent_dropout < 1.0, f"autoencoder.latent_dropout={ae.latent_dropout} must be in [0, 1)")
    _check(ae.kl_weight >= 0, f"autoencoder.kl_weight={ae.kl_weight} must be >= 0")
    _check(ae.head_init in ("random", "centroid"), f"autoencoder.head_init={ae.head_init!r}: random | centroid")
    _check(ae.ce_weight > 0 or ae.mse_weight > 0, "autoencoder.ce_weight and mse_weight cannot both be 0")
    _check(diff.schedule in ("tan", "cosine"), f"diffusion.schedule={diff.schedule!r}: use tan | cosine")
    _check(diff.schedule_d > 0, f"diffusion.schedule_d={diff.schedule_d} must be > 0")
    _check(0.5 < diff.t_max < 1.0, f"diffusion.t_max={diff.t_max} must be in (0.5, 1)")
    _check(0.0 <= diff.self_condition_prob <= 1.0, "diffusion.self_condition_prob must be in [0, 1]")
    _check(diff.denoiser in ("transformer", "dit"), f"diffusion.denoiser={diff.denoiser!r}: use 'transformer' or 'dit'")
    _check(diff.preconditioning in ("none", "edm"), f"diffusion.preconditioning={diff.preconditioning!r}: none | edm")
    _check(
        diff.timestep_sampler in ("uniform", "adaptive"),
        f"diffusion.timestep_sampler={diff.timestep_sampler!r}: use uniform | adaptive",
    )
    _check(diff.adaptive_bins >= 2, f"diffusion.adaptive_bins={diff.adaptive_bins} must be >= 2")
    _check(diff.adaptive_refresh_every >= 1, "diffusion.adaptive_refresh_every must be >= 1")
    _check(0.0 <= diff.adaptive_ema_decay < 1.0, "diffusion.adaptive_ema_decay must be in [0, 1)")
    _check(0.0 <= diff.adaptive_uniform_mix <= 1.0, "diffusion.adaptive_uniform_mix must be in [0, 1]")
    _check(diff.adaptive_start >= 0, f"diffusion.adaptive_start={diff.adaptive_start} must be >= 0")
    _check(
        cfg.sample.sampler in SAMPLER_NAMES,
        f"sample.sampler={cfg.sample.sampler!r}: use {' | '.join(SAMPLER_NAMES)}",
    )
    _check(cfg.sample.steps >= 1, f"sample.steps={cfg.sample.steps} must be >= 1")
    _check(
        cfg.sample.time_grid in TIME_GRID_NAMES,
        f"sample.time_grid={cfg.sample.time_grid!r}: use {' | '.join(TIME_GRID_NAMES)}",
    )
    _check(
        isinstance(cfg.sample.lower_order_final, bool),
        f"sample.lower_order_final={cfg.sample.lower_order_final!r}: use true | false",
    )
    _check(isinstance(cfg.sample.compile, bool), f"sample.compile={cfg.sample.compile!r}: use true | false")
    _check(
        cfg.sample.mixed_precision in ("auto", "no", "bf16"),
        f"sample.mixed_precision={cfg.sample.mixed_precision!r}: use auto | no | bf16",
    )
    _check(cfg.data.validation_size > 0, "data.validation_size must be > 0 (a fraction < 1 or a count)")
    _validate_ldlm(cfg)
    _validate_seq2seq(cfg)
    _validate_ar(cfg)
    if cfg.data.streaming:
        _check(
            cfg.recipe == "ldlm" and cfg.data.packing,
            "data.streaming reads packed chunks for the LDLM recipe: set recipe=ldlm and data.packing=true",
        )
        _check(
            cfg.data.validation_size >= 1 and float(cfg.data.validation_size).is_integer(),
            f"data.validation_size={cfg.data.validation_size}: with data.streaming it is a count of texts (the "
            "first ones of the stream), not a fraction",
        )
    for stage in ("autoencoder_train", "diffusion_train", "joint_train", "decoder_train", "seq2seq_train", "ar_train"):
        tc: TrainConfig = getattr(cfg, stage)
        _check(tc.steps >= 0, f"{stage}.steps={tc.steps} must be >= 0")
        _check(tc.batch_size >= 1, f"{stage}.batch_size={tc.batch_size} must be >= 1")
        _check(tc.batch_size % tc.grad_accum == 0, f"{stage}.batch_size must be divisible by grad_accum")
        _check(tc.lr > 0, f"{stage}.lr={tc.lr} must be > 0")
        for key in ("eval_every", "log_every"):
            _check(getattr(tc, key) >= 1, f"{stage}.{key}={getattr(tc, key)} must be >= 1 (a step interval)")
        _check(0 <= tc.ema_decay < 1, f"{stage}.ema_decay={tc.ema_decay} must be in [0, 1)")
        _check(tc.lr_schedule in ("constant", "cosine"), f"{stage}.lr_schedule: use constant | cosine")
        _check(tc.keep_checkpoints >= 1, f"{stage}.keep_checkpoints={tc.keep_checkpoints} must be >= 1")
        _check(
            tc.max_minutes is None or tc.max_minutes > 0,
            f"{stage}.max_minutes={tc.max_minutes} must be > 0 (or null for no time budget)",
        )
        _check(tc.on_nonfinite in ("stop", "skip"), f"{stage}.on_nonfinite={tc.on_nonfinite!r}: use stop | skip")
        _check(isinstance(tc.compile, bool), f"{stage}.compile={tc.compile!r}: use true | false")
        _check(
            tc.mixed_precision in ("auto", "no", "bf16", "fp16"),
            f"{stage}.mixed_precision: auto|no|bf16|fp16",
        )


def _validate_ldlm(cfg: RunConfig) -> None:
    """LDLM fields: the joint objective's switches and the architecture alternatives (App. B)."""
    ae, joint = cfg.autoencoder, cfg.joint
    _check(
        ae.latent_encoder in ("perceiver", "self_attention", "identity"),
        f"autoencoder.latent_encoder={ae.latent_encoder!r}: use perceiver | self_attention | identity",
    )
    if ae.latent_encoder in ("self_attention", "identity"):
        _check(
            ae.num_latents == cfg.encoder.max_length,
            f"autoencoder.latent_encoder={ae.latent_encoder!r} keeps one latent per token: autoencoder.num_latents="
            f"{ae.num_latents} must equal encoder.max_length={cfg.encoder.max_length}",
        )
        _check(ae.locality_bias == 0, "autoencoder.locality_bias applies to the Perceiver only: set it to 0")
    if ae.latent_encoder == "identity":
        _validate_identity_latents(cfg)
    _check(ae.latent_norm in ("none", "layernorm"), f"autoencoder.latent_norm={ae.latent_norm!r}: use none | layernorm")
    _check(
        ae.latent_norm == "none" or ae.latent_encoder != "identity",
        "autoencoder.latent_norm applies to a learned E_z; with latent_encoder='identity' set it to none",
    )
    _check(0 <= ae.token_decoder_layers, f"autoencoder.token_decoder_layers={ae.token_decoder_layers} must be >= 0")
    _check(ae.token_decoder_heads >= 1, f"autoencoder.token_decoder_heads={ae.token_decoder_heads} must be >= 1")
    _check(ae.vocab_size is None or ae.vocab_size >= 2, f"autoencoder.vocab_size={ae.vocab_size} must be >= 2")
    _check(joint.sigma_dec >= 0, f"joint.sigma_dec={joint.sigma_dec} must be >= 0 (the decoder-input noise std)")
    _check(joint.warmup_steps >= 0, f"joint.warmup_steps={joint.warmup_steps} (S_wu) must be >= 0 (0: no warmup)")
    _check(joint.warmup_k > 0, f"joint.warmup_k={joint.warmup_k} must be > 0")
    _check(
        joint.hidden_weight is None or joint.hidden_weight > 0,
        f"joint.hidden_weight={joint.hidden_weight} (lambda_h) must be > 0, or null for the paper's balance",
    )
    _check(0.0 <= joint.gamma_min <= 1.0, f"joint.gamma_min={joint.gamma_min} must be in [0, 1]")
    _check(
        0.0 <= joint.decoder_clean_fraction <= 1.0,
        f"joint.decoder_clean_fraction={joint.decoder_clean_fraction} must be in [0, 1] (texts decoded from clean z0)",
    )
    _check(
        joint.reconstruction in ("mse", "ce", "ce+mse"),
        f"joint.reconstruction={joint.reconstruction!r}: use mse | ce | ce+mse",
    )
    if joint.skip_token_decoder:
        _check(
            joint.reconstruction == "mse",
            f"joint.reconstruction={joint.reconstruction!r} trains the latent encoder through the token decoder's "
            "cross-entropy, but joint.skip_token_decoder=true drops the token decoder (and its CE) from joint "
            "training: use joint.reconstruction=mse or joint.skip_token_decoder=false",
        )
        if cfg.recipe == "ldlm":
            _check(
                cfg.decoder_train.steps > 0,
                "joint.skip_token_decoder=true leaves the token decoder untrained: set decoder_train.steps > 0 "
                "to post-train it (App. B.2)",
            )
    if cfg.recipe == "ldlm":
        _check(
            not cfg.data.autoencoder_extra,
            "data.autoencoder_extra is COSMOS-only: the LDLM recipe trains every part jointly on data.dataset",
        )
        _check(
            not cfg.data.diffusion_full_window,
            "data.diffusion_full_window is COSMOS-only (a separate diffusion stage): set it to false for recipe=ldlm",
        )


def _validate_identity_latents(cfg: RunConfig) -> None:
    """``latent_encoder=identity``: z is the normalised h itself, so nothing may reshape or resample it, and the
    COSMOS stage 1 (cosmos and seq2seq without init_from) trains only the token decoder D_w through its CE."""
    ae = cfg.autoencoder
    _check(
        ae.kl_weight == 0,
        f"autoencoder.kl_weight={ae.kl_weight}: the identity latent encoder is not variational (z = h): set "
        "autoencoder.kl_weight=0",
    )
    _check(
        ae.latent_dim is None,
        f"autoencoder.latent_dim={ae.latent_dim}: with autoencoder.latent_encoder='identity' the latents are the "
        "encoder's features, their channels its hidden size: leave autoencoder.latent_dim unset (null)",
    )
    if cfg.recipe == "ldlm" or cfg.seq2seq.init_from:
        return
    _check(
        ae.ce_weight > 0,
        "autoencoder.ce_weight=0: with autoencoder.latent_encoder='identity' the autoencoder stage trains only the "
        "token decoder through its cross-entropy (MSE(h, h_hat) has no weights to train): set autoencoder.ce_weight "
        "> 0",
    )
    _check(
        ae.freeze_head_steps == 0 or ae.token_decoder_layers > 0,
        f"autoencoder.freeze_head_steps={ae.freeze_head_steps} freezes the token head, and with "
        "autoencoder.latent_encoder='identity' and autoencoder.token_decoder_layers=0 nothing else trains in the "
        "autoencoder stage: set autoencoder.token_decoder_layers > 0 or autoencoder.freeze_head_steps=0",
    )


def _validate_seq2seq(cfg: RunConfig) -> None:
    """Seq2seq fields (COSMOS App. C.1 and the guidance/MBR options beyond it)."""
    s2s = cfg.seq2seq
    _check(s2s.source_max_length >= 4, f"seq2seq.source_max_length={s2s.source_max_length} must be >= 4")
    _check(s2s.encoder_layers >= 0, f"seq2seq.encoder_layers={s2s.encoder_layers} must be >= 0")
    _check(
        0.0 <= s2s.condition_dropout < 1.0,
        f"seq2seq.condition_dropout={s2s.condition_dropout} must be in [0, 1) (0: no guidance training)",
    )
    _check(s2s.guidance_scale >= 0, f"seq2seq.guidance_scale={s2s.guidance_scale} must be >= 0 (1: plain conditional)")
    _check(s2s.num_candidates >= 1, f"seq2seq.num_candidates={s2s.num_candidates} must be >= 1 (1: no MBR)")
    if s2s.source_template is not None:
        _check("{" in s2s.source_template, f"seq2seq.source_template={s2s.source_template!r} names no {{field}}")
    if cfg.recipe == "seq2seq":
        _check(
            cfg.seq2seq_train.steps > 0,
            "recipe=seq2seq trains the conditional denoiser in seq2seq_train: set seq2seq_train.steps > 0",
        )
        _check(not cfg.data.packing and not cfg.data.streaming, "recipe=seq2seq reads pairs: set data.packing=false")


def _validate_ar(cfg: RunConfig) -> None:
    """The autoregressive baseline's fields (``recipe: ar``)."""
    ar = cfg.ar
    _check(ar.layers >= 1, f"ar.layers={ar.layers} must be >= 1")
    _check(ar.width % ar.heads == 0, f"ar.width={ar.width} must be divisible by ar.heads={ar.heads}")
    _check(ar.temperature > 0, f"ar.temperature={ar.temperature} must be > 0")
    _check(0.0 < ar.top_p <= 1.0, f"ar.top_p={ar.top_p} must be in (0, 1] (1: plain ancestral sampling)")
    if cfg.recipe == "ar":
        _check(cfg.ar_train.steps > 0, "recipe=ar trains the language model in ar_train: set ar_train.steps > 0")
        _check(
            not cfg.data.packing and not cfg.data.streaming,
            "recipe=ar reads one padded row per text, as COSMOS does: set data.packing=false, data.streaming=false",
        )
