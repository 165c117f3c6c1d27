"""Token encoder ``E_h``, chosen by ``encoder.kind``: a frozen Hugging Face ``AutoModel`` (one hidden layer,
normalised) or trainable token embeddings ``Emb_theta`` learned from scratch (LDLM Table 1 and Table 2 "Scratch emb").

Both papers read ``h`` from a frozen pretrained transformer (COSMOS: BERT's last layer; LDLM: GPT-2's
``hidden_states[-3]``) and normalise it per feature with data statistics. Because that encoder never
trains, ``h`` is a pure function of the text and can be cached (see :mod:`ldlm.data.features`); the trainable
embeddings are never cached and train with the rest of the LDLM joint stage.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ldlm.storage.resources import resolve_model


class EncoderError(ValueError):
    """A frozen encoder could not be built as configured."""


def check_encoder_config(cfg) -> None:
    """Checks of a :class:`~ldlm.config.RunConfig` that need the encoder's own config and tokenizer (not its
    weights): layer index in range, token decoder vocabulary = the tokenizer's, token decoder heads | hidden size.
    Raises :class:`~ldlm.config.ConfigError` naming the fields, before anything is trained."""
    from transformers import AutoConfig, AutoTokenizer

    from ldlm.config import ConfigError

    enc, ae = cfg.encoder, cfg.autoencoder
    path = resolve_model(enc.name)
    model_cfg = AutoConfig.from_pretrained(path)
    num_layers, hidden = model_cfg.num_hidden_layers, model_cfg.hidden_size
    if enc.kind == "frozen" and not -(num_layers + 1) <= enc.layer <= num_layers:
        raise ConfigError(
            f"encoder.layer={enc.layer} is out of range for encoder.name={enc.name!r} with {num_layers} layers: "
            f"use an index in [-{num_layers + 1}, {num_layers}] (e.g. -1 last, -3 third-to-last)"
        )
    vocab = len(AutoTokenizer.from_pretrained(path))
    if ae.vocab_size is not None and ae.vocab_size != vocab:
        raise ConfigError(
            f"autoencoder.vocab_size={ae.vocab_size} differs from the {vocab} tokens of encoder.name={enc.name!r}'s "
            "tokenizer: the token decoder predicts the encoder's tokens (leave autoencoder.vocab_size unset)"
        )
    if enc.prefix_bos and enc.kind == "frozen":
        try:
            prefix_token(AutoTokenizer.from_pretrained(path))
        except EncoderError as err:
            raise ConfigError(str(err)) from err
    if ae.token_decoder_layers and hidden % ae.token_decoder_heads:
        raise ConfigError(
            f"autoencoder.token_decoder_heads={ae.token_decoder_heads} must divide the hidden size {hidden} of "
            f"encoder.name={enc.name!r} (the token decoder's width)"
        )


def prefix_token(tokenizer) -> int:
    """The token ``encoder.prefix_bos`` puts before every text (BOS, else EOS: GPT-2's <|endoftext|>). Refused for
    tokenizers that already start each text with a special token (BERT's [CLS] takes the first position itself)."""
    first = tokenizer("a")["input_ids"][0]
    if first in tokenizer.all_special_ids:
        raise EncoderError(
            f"encoder.prefix_bos=true: {tokenizer.name_or_path}'s tokenizer already starts every text with "
            f"{tokenizer.convert_ids_to_tokens(first)!r}; set encoder.prefix_bos=false"
        )
    token = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if token is None:
        raise EncoderError(f"encoder.prefix_bos=true: {tokenizer.name_or_path}'s tokenizer has no BOS or EOS token")
    return token


def _drop_unused_layers(model: nn.Module, num_layers: int, keep: int) -> int:
    """Cut the model's block list to its first ``keep`` blocks; returns how many blocks it now runs.

    ``hidden_states[k]`` depends on blocks ``1..k`` only, so the blocks after them are wasted compute (29 of 30
    of SmolLM2's for ``layer=0``). One block more than needed is kept because a final norm (GPT-2, Llama) is
    applied to the last entry; ``hidden_states[k]`` is then unchanged bit for bit. Models whose blocks are not
    one ``nn.ModuleList`` of ``num_layers`` modules are left whole.
    """
    lists = [name for name, mod in model.named_modules() if isinstance(mod, nn.ModuleList) and len(mod) == num_layers]
    if len(lists) != 1 or keep >= num_layers:
        return num_layers
    parent_name, _, attr = lists[0].rpartition(".")
    parent = model.get_submodule(parent_name)
    setattr(parent, attr, nn.ModuleList(list(getattr(parent, attr))[:keep]))
    return keep


class TokenEncoder(nn.Module):
    """What every ``E_h`` shares: the tokenizer of ``name``, the hidden size ``D``, per-feature ``mean``/``std``
    buffers and (de)normalisation. Subclasses implement ``forward(input_ids, attention_mask) -> h: (B, L, D)``."""

    trainable: bool = False  # True: h carries gradient (never cached; trained by the LDLM joint stage)
    prefix_bos: bool = False  # True: h is read after a prepended BOS (FrozenEncoder, encoder.prefix_bos)

    def __init__(self, name: str, hidden_size: int):
        super().__init__()
        from transformers import AutoTokenizer

        self.name = name
        self.path = resolve_model(name)
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        if self.tokenizer.pad_token_id is None:  # GPT-style tokenizers: pad with EOS (masked anyway)
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.hidden_size = hidden_size
        self.register_buffer("mean", torch.zeros(hidden_size))
        self.register_buffer("std", torch.ones(hidden_size))

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    def normalize(self, h: torch.Tensor) -> torch.Tensor:
        """Per-feature standardisation with the fitted statistics: (B, L, D) -> (B, L, D)."""
        return (h - self.mean) / self.std

    def denormalize(self, h: torch.Tensor) -> torch.Tensor:
        return h * self.std + self.mean


class FrozenEncoder(TokenEncoder):
    """Wraps a pretrained encoder; ``forward`` returns raw hidden states ``h: (B, L, D)`` of one layer.

    The per-feature ``mean``/``std`` buffers (estimated with :meth:`fit_stats`) are the only state that
    belongs to a trained model; the pretrained weights are referenced by ``name`` and never saved.
    """

    def __init__(self, name: str, layer: int = -1, *, prefix_bos: bool = False, dtype: torch.dtype = torch.float32):
        from transformers import AutoModel

        model = AutoModel.from_pretrained(resolve_model(name), dtype=dtype)
        super().__init__(name, model.config.hidden_size)
        # Decoder-only models (GPT-2, Llama) load as their base model; keep only what yields hidden states.
        self.model = model.eval().requires_grad_(False)
        num_layers = model.config.num_hidden_layers
        # hidden_states has num_layers + 1 entries (embeddings first): valid indices -(n+1) .. n.
        if not -(num_layers + 1) <= layer <= num_layers:
            raise EncoderError(
                f"encoder.layer={layer} is out of range for {name!r} with {num_layers} layers: "
                f"use an index in [-{num_layers + 1}, {num_layers}] (e.g. -1 last, -3 third-to-last)"
            )
        self.layer = layer  # as configured (cache keys and messages use it)
        self._index = layer % (num_layers + 1)  # the same entry counted from the embeddings
        self.kept_layers = _drop_unused_layers(model, num_layers, keep=min(self._index + 1, num_layers))
        # Causal LMs park an input-independent "attention sink" on position 0 (SmolLM2 layer -3: |h| ~22,000 vs
        # ~600 elsewhere, cosine 0.99999 between texts), so the first token is unreadable from its h and the
        # sink inflates the per-feature std. prefix_bos gives the sink a BOS position of its own, dropped from h.
        self.prefix_bos = prefix_bos
        self._prefix = prefix_token(self.tokenizer) if prefix_bos else None

    def train(self, mode: bool = True) -> FrozenEncoder:  # frozen: always eval (no dropout)
        super().train(False)
        return self

    @torch.no_grad()
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """input_ids, attention_mask: (B, L) -> raw hidden states h: (B, L, D) of ``self.layer`` (with
        ``prefix_bos``: of ``[BOS] + input_ids``, the BOS position dropped)."""
        if self._prefix is not None:
            input_ids = torch.cat([input_ids.new_full((input_ids.shape[0], 1), self._prefix), input_ids], dim=1)
            attention_mask = torch.cat([attention_mask.new_ones((attention_mask.shape[0], 1)), attention_mask], dim=1)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        h = out.hidden_states[self._index].float()
        return h[:, 1:] if self._prefix is not None else h

    @torch.no_grad()
    def fit_stats(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Estimate per-feature mean/std of raw ``h`` over the real (unmasked) positions of ``batches``.

        ``batches`` yields ``(h: (B, L, D), mask: (B, L))``; sums are accumulated in float64.
        """
        total = torch.zeros(self.hidden_size, dtype=torch.float64)
        total_sq = torch.zeros_like(total)
        count = 0
        for h, mask in batches:
            real = h.double()[mask.bool()]  # (P, D)
            total += real.sum(0).cpu()
            total_sq += (real**2).sum(0).cpu()
            count += real.shape[0]
        if count < 2:
            raise EncoderError("cannot estimate feature statistics from fewer than 2 token positions")
        mean = total / count
        var = (total_sq / count - mean**2).clamp_min(1e-8)
        self.mean.copy_(mean.float())
        self.std.copy_(var.sqrt().float())


class TrainableEmbeddings(TokenEncoder):
    """``Emb_theta``: token embeddings learned from scratch, ``h = Emb_theta(w): (B, L, D)`` (``encoder.kind=
    trainable_embeddings``; LDLM Table 1's token-encoder row and Table 2's "Scratch emb"). Only the tokenizer and the
    hidden size ``D`` of ``name`` are used. Initialised N(0, 1), the scale of normalised features, and never
    normalised: data statistics of a moving encoder would be stale, so ``mean``/``std`` stay 0/1. The embedding
    matrix is saved with the model (``encoder.embedding.weight``); the LDLM joint stage trains it."""

    trainable = True

    def __init__(self, name: str):
        from transformers import AutoConfig

        super().__init__(name, AutoConfig.from_pretrained(resolve_model(name)).hidden_size)
        self.layer = None  # no pretrained layer is read
        self.embedding = nn.Embedding(self.vocab_size, self.hidden_size)
        nn.init.normal_(self.embedding.weight)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """input_ids, attention_mask: (B, L) -> h: (B, L, D), differentiable in the embedding matrix."""
        return self.embedding(input_ids)

    def fit_stats(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """No statistics for a trainable encoder (``batches`` is not read): h stays unnormalised."""


def build_encoder(cfg) -> TokenEncoder:
    """The E_h an :class:`~ldlm.config.EncoderConfig` names by ``kind`` (frozen | trainable_embeddings)."""
    if cfg.kind == "trainable_embeddings":
        return TrainableEmbeddings(cfg.name)
    return FrozenEncoder(cfg.name, cfg.layer, prefix_bos=cfg.prefix_bos)
