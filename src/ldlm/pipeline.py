"""``LatentDiffusionLM``: the trained system as one object - encode text, decode latents, generate text.

A saved model is a directory with ``config.json`` (the full run config), ``model.safetensors`` (every
trained tensor plus the feature/latent statistics) and a model card ``README.md`` (:mod:`ldlm.storage.model_card`). The
frozen encoder's pretrained weights are not copied: they are loaded by the name in the config. Every loader takes
a local directory or a Hugging Face hub id ``owner/name`` (with ``revision`` and ``token``; see
:mod:`ldlm.storage.hub`).
COSMOS and LDLM runs load alike; LDLM's diffusion works on the raw latents (``latent_mean`` 0, ``latent_std`` 1)
and its packed-chunk models read texts without specials.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ldlm.config import ConfigError, RunConfig, config_from_dict
from ldlm.data.tokenize import decode_text, tokenize_texts
from ldlm.diffusion import build_denoiser, build_schedule, sample_latents
from ldlm.diffusion.conditioning import guided_prediction
from ldlm.model.autoencoder import TextAutoencoder
from ldlm.model.encoders import TokenEncoder, build_encoder
from ldlm.model.source_latents import encode_sources, num_source_latents
from ldlm.storage.hub import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME, push_model, resolve_pretrained
from ldlm.storage.io import WeightFileError, atomic_directory, atomic_write_json, load_safetensors, save_safetensors
from ldlm.training.accel import compile_denoiser, sampling_autocast

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "LatentDiffusionLM", "load_model", "read_pretrained", "write_pretrained"]


class LatentDiffusionLM(nn.Module):
    """Token encoder E_h + autoencoder (E_z, D_h, D_w) + latent denoiser, with normalisation statistics."""

    def __init__(self, cfg: RunConfig, encoder: TokenEncoder | None = None):
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder or build_encoder(cfg.encoder)
        self.max_length = cfg.encoder.max_length
        self.autoencoder = TextAutoencoder(
            cfg.autoencoder,
            hidden_size=self.encoder.hidden_size,
            max_length=self.max_length,
            vocab_size=self.encoder.vocab_size,
        )
        n, d = cfg.autoencoder.num_latents, self.autoencoder.latent_dim
        seq2seq = cfg.recipe == "seq2seq"  # source-conditioned denoiser (COSMOS App. C.1)
        self.denoiser = build_denoiser(
            cfg.diffusion,
            latent_dim=d,
            num_latents=n,
            condition_layers=cfg.seq2seq.encoder_layers if seq2seq else None,
            source_latents=num_source_latents(cfg) if seq2seq else 0,
        )
        self.schedule = build_schedule(cfg.diffusion.schedule, cfg.diffusion.schedule_d, cfg.diffusion.t_max)
        # COSMOS: diffusion runs on per-(position, feature) standardised latents (z - mu) / sigma.
        self.register_buffer("latent_mean", torch.zeros(n, d))
        self.register_buffer("latent_std", torch.ones(n, d))

    @property
    def device(self) -> torch.device:
        return self.latent_mean.device

    @property
    def latent_shape(self) -> tuple[int, int]:
        return tuple(self.latent_mean.shape)

    @property
    def is_conditional(self) -> bool:
        """Whether the denoiser reads a source (a ``recipe: seq2seq`` model)."""
        return bool(getattr(self.denoiser, "conditional", False))

    # ------------------------------------------------------------------ save / load

    def trained_state_dict(self) -> dict[str, torch.Tensor]:
        """Everything except the frozen encoder's pretrained weights (kept by name in the config); trainable
        embeddings (``encoder.embedding.weight``) are saved."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("encoder.model.")}

    def save_pretrained(self, path: str | Path, *, summary: dict | None = None) -> Path:
        """Write ``config.json`` + ``model.safetensors`` + the model card ``README.md`` into ``path`` atomically
        (temp dir, then rename). ``summary``: the run's figures for the card (default: a ``summary.json`` found
        beside ``path`` or in the run directory above ``model/``)."""
        return write_pretrained(path, self.cfg, self.trained_state_dict(), summary=summary)

    def push_to_hub(
        self,
        repo_id: str,
        *,
        private: bool | None = None,
        revision: str | None = None,
        token: str | None = None,
        commit_message: str | None = None,
    ) -> str:
        """Save into a temporary directory and upload weights, config and card to ``repo_id`` in one commit;
        returns the commit URL (``ldlm push RUN_DIR`` also uploads a run's summary and evaluation reports)."""
        import tempfile

        with tempfile.TemporaryDirectory(prefix="ldlm-push-") as tmp:
            path = self.save_pretrained(Path(tmp) / "model")
            return push_model(
                path, repo_id, private=private, revision=revision, token=token, commit_message=commit_message
            )

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        device: str | torch.device = "cpu",
        *,
        revision: str | None = None,
        token: str | bool | None = None,
    ) -> LatentDiffusionLM:
        """Load a directory written by :meth:`save_pretrained` (or a run directory holding ``model/``), or a hub id
        ``owner/name`` at ``revision`` (a local path wins when it exists; the hub cache serves HF_HUB_OFFLINE)."""
        cfg, state, weights = read_pretrained(path, revision=revision, token=token)
        if cfg.recipe == "ar":
            raise WeightFileError(
                f"{weights.parent} holds recipe='ar' (the autoregressive baseline): load it with "
                "ldlm.pipeline.load_model"
            )
        model = cls(cfg)
        try:
            missing, unexpected = model.load_state_dict(state, strict=False)
        except RuntimeError as err:  # shape mismatches
            raise WeightFileError(f"{weights} does not match {weights.parent / CONFIG_NAME}: {err}") from err
        missing = [k for k in missing if not k.startswith("encoder.model.")]
        if missing or unexpected:
            raise WeightFileError(
                f"{weights} does not match the config: missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
        return model.to(device).eval()

    # ------------------------------------------------------------------ text <-> latents

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """texts -> input_ids, attention_mask: (B, L) padded/truncated to max_length as in training: the padded rows
        of :func:`tokenize_texts`, or no special tokens when the model was trained on packed chunks (none there)."""
        ids, mask = texts_to_ids(self.encoder.tokenizer, texts, self.max_length, packing=self.cfg.data.packing)
        return ids.to(self.device), mask.to(self.device)

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Normalised frozen-encoder features h: (B, L, D), zero at padding."""
        return self.normalize_features(self.encoder(input_ids, attention_mask), attention_mask)

    def normalize_features(self, h: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Raw E_h features (B, L, D) (computed or cached) -> normalised per feature, zero at padding."""
        return self.encoder.normalize(h) * attention_mask.unsqueeze(-1)

    def normalize_latents(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self.latent_mean) / self.latent_std

    def denormalize_latents(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.latent_std + self.latent_mean

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> torch.Tensor:
        """texts -> normalised latents (B, N, d), the space the diffusion model works in."""
        ids, mask = self.tokenize(texts)
        return self.normalize_latents(self.autoencoder.encode(self.features(ids, mask), mask))

    @torch.inference_mode()
    def decode_ids(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents (B, N, d) -> argmax token ids (B, L)."""
        return self.autoencoder.decode_tokens(self.denormalize_latents(latents), self.max_length)

    def ids_to_texts(self, ids: torch.Tensor) -> list[str]:
        """Cut each row at its first end token (SEP/EOS) or padding, drop specials, detokenise cleanly.

        Packed-chunk models (``data.packing``) generate several texts per row, separated by EOS/SEP: every
        segment is kept, joined by a space.
        """
        return ids_to_texts(self.encoder.tokenizer, ids, packing=self.cfg.data.packing)

    def decode(self, latents: torch.Tensor) -> list[str]:
        """Normalised latents (B, N, d) -> texts."""
        return self.ids_to_texts(self.decode_ids(latents))

    @torch.inference_mode()
    def generate_latents(
        self,
        num_samples: int,
        *,
        steps: int | None = None,
        sampler: str | None = None,
        seed: int | None = None,
        batch_size: int | None = None,
        sources: list[str] | None = None,
        guidance_scale: float | None = None,
    ) -> torch.Tensor:
        """Sample normalised latents (num_samples, N, d) with the configured (or given) sampler; with ``sources``
        one latent per source (num_samples is ignored), guided by ``guidance_scale`` (default: the config's)."""
        sc = self.cfg.sample
        steps = sc.steps if steps is None else steps
        sampler = sampler or sc.sampler
        batch_size = batch_size or sc.batch_size
        generator = torch.Generator().manual_seed(sc.seed if seed is None else seed)
        self.eval()
        compile_denoiser(self.denoiser, enabled=sc.compile, device=self.device, field="sample.compile")
        src = src_mask = None
        if sources is not None:
            if not self.is_conditional:
                raise ValueError(
                    f"model {self.cfg.name!r} (recipe={self.cfg.recipe}) was trained without sources and cannot "
                    "condition on them: train a seq2seq preset (ldlm configs), or call generate() without sources"
                )
            src, src_mask = encode_sources(self, list(sources))
            num_samples = src.shape[0]
        scale = self.cfg.seq2seq.guidance_scale if guidance_scale is None else guidance_scale
        out = []
        for start in range(0, num_samples, batch_size):
            b = min(batch_size, num_samples - start)
            denoise = self.denoiser
            if src is not None:
                cond = self.denoiser.encode_condition(src[start : start + b], src_mask[start : start + b])
                denoise = lambda z, t, x0, cond=cond: guided_prediction(self.denoiser, z, t, x0, cond, scale)  # noqa: E731
            out.append(
                sample_latents(
                    denoise,
                    self.schedule,
                    (b, *self.latent_shape),
                    steps=steps,
                    sampler=sampler,
                    generator=generator,
                    device=self.device,
                    autocast=sampling_autocast(sc.mixed_precision, self.device),
                    grid=sc.time_grid,
                    lower_order_final=sc.lower_order_final,
                )
            )
        return torch.cat(out)

    def generate(
        self,
        num_samples: int = 8,
        *,
        steps: int | None = None,
        sampler: str | None = None,
        seed: int | None = None,
        batch_size: int | None = None,
        sources: list[str] | None = None,
        guidance_scale: float | None = None,
        num_candidates: int | None = None,
    ) -> list[str]:
        """Sample ``num_samples`` texts; same seed, same texts. With ``sources`` (a seq2seq model): one text per
        source, the MBR choice among ``num_candidates`` (default: ``seq2seq.num_candidates``) when above 1."""
        if sources is None:
            if num_samples < 1:
                raise ValueError(f"num_samples={num_samples} must be >= 1")
            latents = self.generate_latents(num_samples, steps=steps, sampler=sampler, seed=seed, batch_size=batch_size)
            return self.decode(latents)
        k = num_candidates or self.cfg.seq2seq.num_candidates
        repeated = [s for s in sources for _ in range(k)]  # k candidates per source, adjacent
        latents = self.generate_latents(
            0, steps=steps, sampler=sampler, seed=seed, batch_size=batch_size, sources=repeated,
            guidance_scale=guidance_scale,
        )  # fmt: skip
        texts = self.decode(latents)
        if k == 1:
            return texts
        from ldlm.sampling.mbr import mbr_select

        return mbr_select([texts[i : i + k] for i in range(0, len(texts), k)])


# ---------------------------------------------------------------------------- shared by every saved model


def texts_to_ids(tokenizer, texts: list[str], max_length: int, *, packing: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """texts -> input_ids, attention_mask: (B, L) as in training: the padded rows of :func:`tokenize_texts`, or
    no special tokens when the model was trained on packed chunks (none there)."""
    if not texts:
        raise ValueError("no texts given")
    if not packing:
        tok = tokenize_texts(tokenizer, list(texts), max_length)
        return tok.input_ids, tok.attention_mask
    enc = tokenizer(
        list(texts),
        padding="max_length",
        truncation=True,
        max_length=max_length,
        return_tensors="pt",
        add_special_tokens=False,
    )
    return enc["input_ids"], enc["attention_mask"]


def ids_to_texts(tokenizer, ids: torch.Tensor, *, packing: bool) -> list[str]:
    """Cut each row (B, L) at its first end token (SEP/EOS) or padding, drop specials, detokenise cleanly.

    Packed-chunk models (``data.packing``) generate several texts per row, separated by EOS/SEP: every segment is
    kept, joined by a space.
    """
    stops = {i for i in (tokenizer.sep_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) if i is not None}
    starts = {i for i in (tokenizer.cls_token_id, tokenizer.bos_token_id) if i is not None}
    texts = []
    for row in ids.tolist():
        if row and row[0] in starts:
            row = row[1:]
        if packing:
            segments, current = [], []
            for t in row:
                if t in stops:
                    segments.append(current)
                    current = []
                else:
                    current.append(t)
            segments.append(current)
        else:
            segments = [row[: next((i for i, t in enumerate(row) if t in stops), len(row))]]
        decoded = (decode_text(tokenizer, s) for s in segments)
        texts.append(" ".join(" ".join(d.split()) for d in decoded if d.strip()))
    return texts


def write_pretrained(
    path: str | Path, cfg: RunConfig, state: dict[str, torch.Tensor], *, summary: dict | None = None
) -> Path:
    """``config.json`` + ``model.safetensors`` + model card ``README.md`` into ``path`` atomically (temp dir, then
    rename). The card carries ``summary`` (default: the run's ``summary.json`` beside ``path``)."""
    from ldlm.storage.model_card import build_card, find_summary, local_ref

    path = Path(path)
    summary = find_summary(path) if summary is None else summary
    card = str(build_card(cfg, summary, {}, model_ref=local_ref(path)))  # new weights: no evaluation yet
    with atomic_directory(path) as tmp:
        atomic_write_json(tmp / CONFIG_NAME, cfg.to_dict())
        save_safetensors(state, tmp / WEIGHTS_NAME)
        (tmp / CARD_NAME).write_text(card, encoding="utf-8")
    return path


def pretrained_dir(path: str | Path, *, revision: str | None = None, token: str | bool | None = None) -> Path:
    """A directory written by ``save_pretrained``: ``path`` itself, a run directory's ``model/``, or the local
    snapshot of the hub id ``owner/name`` at ``revision`` when no such local path exists."""
    path = resolve_pretrained(path, revision=revision, token=token)
    if (path / "model" / CONFIG_NAME).exists():
        path = path / "model"
    if not (path / CONFIG_NAME).exists():
        raise WeightFileError(
            f"{path} holds no trained model ({CONFIG_NAME} missing): pass a directory written by "
            "save_pretrained, a finished `ldlm train` run directory or a hub id (owner/name)"
        )
    return path


def read_pretrained(
    path: str | Path, *, revision: str | None = None, token: str | bool | None = None
) -> tuple[RunConfig, dict[str, torch.Tensor], Path]:
    """(config, state dict, weight file) of a saved model (local or hub id); safetensors only, never unpickled."""
    path = pretrained_dir(path, revision=revision, token=token)
    weights = path / WEIGHTS_NAME
    if not weights.exists():
        others = sorted(p.name for p in path.glob("*") if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
        hint = f" (found {', '.join(others)}: ldlm never unpickles weight files)" if others else ""
        raise WeightFileError(f"{path} has no {WEIGHTS_NAME}{hint}")
    try:
        cfg = config_from_dict(json.loads((path / CONFIG_NAME).read_text()))
    except (json.JSONDecodeError, ConfigError) as err:
        raise WeightFileError(f"{path / CONFIG_NAME} is not a valid ldlm config: {err}") from err
    return cfg, load_safetensors(weights), weights


def load_model(
    path: str | Path,
    device: str | torch.device = "cpu",
    *,
    revision: str | None = None,
    token: str | bool | None = None,
):
    """Any saved model (local directory or hub id ``owner/name`` at ``revision``), by the ``recipe`` of its config:
    an :class:`~ldlm.baselines.ar.ARLanguageModel` for ``recipe: ar``, a :class:`LatentDiffusionLM` otherwise.
    Both offer tokenize / ids_to_texts / generate."""
    path = pretrained_dir(path, revision=revision, token=token)  # a hub id becomes its local snapshot once
    try:
        recipe = json.loads((path / CONFIG_NAME).read_text()).get("recipe")
    except (OSError, ValueError, AttributeError):
        recipe = None  # unreadable: the loader below reports why
    if recipe == "ar":
        from ldlm.baselines.ar import ARLanguageModel

        return ARLanguageModel.from_pretrained(path, device=device)
    return LatentDiffusionLM.from_pretrained(path, device=device)
