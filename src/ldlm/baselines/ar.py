"""The autoregressive baseline (``recipe: ar``, issue 21): a decoder-only transformer over the frozen encoder's
tokenizer, the "GPT-2 trained from scratch on the same data" both papers compare with.

nanoGPT's shape: token embedding + learned positions, pre-norm :class:`~ldlm.model.transformer.TransformerBlock` s
under a causal mask, a final LayerNorm and an LM head tied to the embedding (``ar.tie_embeddings``). It reads the same
padded rows as COSMOS (:func:`~ldlm.data.tokenize.tokenize_texts`: ``[CLS] w ... [SEP] [PAD] ...`` for BERT
tokenizers) and is trained on next-token cross-entropy with padding targets masked out. Sampling is ancestral,
with temperature and nucleus (top-p) options, seeded by a ``torch.Generator``; generation keeps a cache of each
block's normed inputs, so a step runs the blocks on the new position only (keys and values of earlier positions
are re-projected from the cache: at L = 32 that is cheap, and the blocks stay the library's own).

:class:`ARLanguageModel` has the pipeline surface of :class:`~ldlm.pipeline.LatentDiffusionLM` that the CLI and
``ldlm evaluate`` use: ``from_pretrained`` / ``save_pretrained`` / ``tokenize`` / ``ids_to_texts`` /
``generate(num_samples, seed=..., batch_size=...)``; :func:`ldlm.pipeline.load_model` picks the class by recipe.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ldlm.config import ARConfig, RunConfig
from ldlm.model.transformer import TransformerBlock
from ldlm.pipeline import ids_to_texts, read_pretrained, texts_to_ids, write_pretrained
from ldlm.storage.io import WeightFileError
from ldlm.storage.resources import resolve_model


def causal_bias(length: int, device: torch.device | None = None) -> torch.Tensor:
    """(1, 1, L, L) additive attention bias: 0 where key j <= query i, -inf above the diagonal."""
    bias = torch.full((length, length), float("-inf"), device=device).triu(1)
    return bias[None, None]


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """logits: (B, V) -> the same with every token outside the nucleus set to -inf: the nucleus is the smallest set
    of most likely tokens whose probability reaches ``top_p`` (the most likely token is always kept)."""
    if top_p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(-1)
    mass_before = probs.cumsum(-1) - probs  # probability of the more likely tokens
    drop_sorted = mass_before >= top_p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def sample_next(logits: torch.Tensor, generator: torch.Generator, *, temperature: float, top_p: float) -> torch.Tensor:
    """One ancestral draw per row from softmax(logits / temperature) restricted to the top-p nucleus: (B, V) ->
    (B, 1) token ids. Drawn on the CPU with ``generator`` (the same ids on any device)."""
    probs = top_p_filter(logits.float() / temperature, top_p).softmax(-1)
    return torch.multinomial(probs.cpu(), 1, generator=generator)


def next_token_pairs(
    ids: torch.Tensor, mask: torch.Tensor, start_id: int, prepend: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Padded rows ids, mask: (B, L) -> inputs (B, T), targets (B, T), target mask (B, T): next-token pairs with
    padding targets masked out; T = L with ``start_id`` prepended (``prepend``), else L - 1."""
    if prepend:
        start = torch.full_like(ids[:, :1], start_id)
        return torch.cat([start, ids[:, :-1]], 1), ids, mask
    return ids[:, :-1], ids[:, 1:], mask[:, 1:]


def lm_loss(
    net: ARTransformer, ids: torch.Tensor, mask: torch.Tensor, start_id: int, prepend: bool
) -> tuple[torch.Tensor, dict]:
    """Mean next-token cross-entropy over the real target tokens of rows (B, L), with its sum, count and accuracy."""
    inputs, targets, tmask = next_token_pairs(ids, mask, start_id, prepend)
    logits = net(inputs)
    nll = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="none").view_as(targets)
    keep = tmask.bool()
    count = keep.sum().clamp_min(1)
    total = nll[keep].sum()
    acc = (logits.argmax(-1) == targets)[keep].float().sum() / count
    return total / count, {"nll_sum": total.item(), "tokens": int(keep.sum()), "acc": acc.item()}


class ARTransformer(nn.Module):
    """Token ids (B, T) -> next-token logits (B, T, V), T <= ``max_length`` positions."""

    def __init__(self, cfg: ARConfig, *, vocab_size: int, max_length: int):
        super().__init__()
        self.max_length = max_length
        self.tok_emb = nn.Embedding(vocab_size, cfg.width)
        self.pos_emb = nn.Parameter(torch.randn(max_length, cfg.width) * 0.02)
        self.blocks = nn.ModuleList(TransformerBlock(cfg.width, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.layers))
        self.norm_out = nn.LayerNorm(cfg.width)
        self.head = None if cfg.tie_embeddings else nn.Linear(cfg.width, vocab_size, bias=False)
        nn.init.normal_(self.tok_emb.weight, std=0.02)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Final hidden states (B, T, W) -> logits (B, T, V)."""
        x = self.norm_out(x)
        return self.head(x) if self.head is not None else F.linear(x, self.tok_emb.weight)

    def embed(self, ids: torch.Tensor, start: int = 0) -> torch.Tensor:
        """ids: (B, T) at positions start .. start + T - 1 -> (B, T, W)."""
        end = start + ids.shape[1]
        if end > self.max_length:
            raise ValueError(f"{end} positions exceed this model's max_length={self.max_length}")
        return self.tok_emb(ids) + self.pos_emb[start:end]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids: (B, T) -> logits (B, T, V); position i sees positions <= i only."""
        x = self.embed(ids)
        bias = causal_bias(ids.shape[1], ids.device)
        for block in self.blocks:
            x = block(x, bias)
        return self.logits(x)

    def step(self, ids: torch.Tensor, cache: list[torch.Tensor]) -> torch.Tensor:
        """One new position: ids (B, 1) -> logits (B, V). ``cache`` holds each block's normed inputs so far
        (B, t, W) and is extended in place; equal to ``forward`` on the whole prefix, at one position's cost."""
        x = self.embed(ids, start=cache[0].shape[1] if cache else 0)
        for i, block in enumerate(self.blocks):
            y = block.norm_attn(x)
            if len(cache) <= i:
                cache.append(y)
            else:
                cache[i] = torch.cat([cache[i], y], dim=1)
            x = x + block.attn(y, cache[i])  # the newest query may see every cached key: causal by construction
            x = x + block.mlp(block.norm_mlp(x))
        return self.logits(x)[:, -1]


class ARLanguageModel(nn.Module):
    """The AR baseline as one object: tokenizer of ``encoder.name`` + :class:`ARTransformer` (``self.net``)."""

    def __init__(self, cfg: RunConfig, tokenizer=None):
        super().__init__()
        from transformers import AutoTokenizer

        self.cfg = cfg
        self.max_length = cfg.encoder.max_length
        self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(resolve_model(cfg.encoder.name))
        if self.tokenizer.pad_token_id is None:  # GPT-style tokenizers: pad with EOS (masked anyway)
            self.tokenizer.pad_token = self.tokenizer.eos_token
        first = self.tokenizer("a")["input_ids"][0]
        # Rows that start with a special token ([CLS]) begin generation from it; otherwise (GPT-2) a BOS/EOS is
        # prepended, so that the first word is modelled too.
        self.prepend_start = first not in self.tokenizer.all_special_ids
        self.start_id = (
            first
            if not self.prepend_start
            else next(i for i in (self.tokenizer.bos_token_id, self.tokenizer.eos_token_id) if i is not None)
        )
        stops = (self.tokenizer.sep_token_id, self.tokenizer.eos_token_id)
        self.stop_ids = sorted({i for i in stops if i is not None})
        self.net = ARTransformer(cfg.ar, vocab_size=len(self.tokenizer), max_length=self.max_length)

    @property
    def device(self) -> torch.device:
        return self.net.pos_emb.device

    @property
    def is_conditional(self) -> bool:
        return False

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def loss(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Padded rows ids, mask: (B, L) -> :func:`lm_loss` of this model."""
        return lm_loss(self.net, ids.to(self.device), mask.to(self.device), self.start_id, self.prepend_start)

    # ------------------------------------------------------------------ save / load

    def trained_state_dict(self) -> dict[str, torch.Tensor]:
        return self.state_dict()

    def save_pretrained(self, path: str | Path) -> Path:
        """``config.json`` + ``model.safetensors`` into ``path`` atomically, as the pipeline saves."""
        return write_pretrained(path, self.cfg, self.trained_state_dict())

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu") -> ARLanguageModel:
        """Load a directory written by :meth:`save_pretrained` (or a run directory holding ``model/``)."""
        cfg, state, weights = read_pretrained(path)
        if cfg.recipe != "ar":
            raise WeightFileError(f"{weights.parent} holds a recipe={cfg.recipe!r} model: load it with load_model")
        model = cls(cfg)
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            raise WeightFileError(f"{weights} does not match its config: {err}") from err
        return model.to(device).eval()

    # ------------------------------------------------------------------ text <-> ids

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """texts -> input_ids, attention_mask: (B, L), the padded rows the model was trained on."""
        ids, mask = texts_to_ids(self.tokenizer, texts, self.max_length, packing=False)
        return ids.to(self.device), mask.to(self.device)

    def ids_to_texts(self, ids: torch.Tensor) -> list[str]:
        """Rows (B, L) -> texts, cut at the first end token or padding."""
        return ids_to_texts(self.tokenizer, ids, packing=False)

    # ------------------------------------------------------------------ sampling

    @torch.inference_mode()
    def generate_ids(
        self,
        num_samples: int,
        *,
        generator: torch.Generator,
        temperature: float | None = None,
        top_p: float | None = None,
        use_cache: bool = True,
    ) -> torch.Tensor:
        """Ancestral sampling of ``num_samples`` rows (num_samples, L); after its end token a row is padding.
        Draws happen on the CPU with ``generator``, so a seed gives the same rows on any device."""
        temperature = self.cfg.ar.temperature if temperature is None else temperature
        top_p = self.cfg.ar.top_p if top_p is None else top_p
        self.eval()
        pad = self.tokenizer.pad_token_id
        ids = torch.full((num_samples, 1), self.start_id, dtype=torch.long, device=self.device)
        done = torch.zeros(num_samples, dtype=torch.bool, device=self.device)
        stops = torch.tensor(self.stop_ids, device=self.device)
        cache: list[torch.Tensor] = []
        length = self.max_length + (1 if self.prepend_start else 0)
        while ids.shape[1] < length:
            logits = self.net.step(ids[:, -1:], cache) if use_cache else self.net(ids)[:, -1]
            nxt = sample_next(logits, generator, temperature=temperature, top_p=top_p).to(self.device)
            nxt = nxt.masked_fill(done[:, None], pad)
            done |= torch.isin(nxt[:, 0], stops)
            ids = torch.cat([ids, nxt], 1)
        return ids[:, 1:] if self.prepend_start else ids

    def generate(
        self,
        num_samples: int = 8,
        *,
        steps: int | None = None,
        sampler: str | None = None,
        seed: int | None = None,
        batch_size: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        **unused,
    ) -> list[str]:
        """Sample ``num_samples`` texts; same seed, same texts. The keywords of
        :meth:`LatentDiffusionLM.generate` are accepted; the diffusion-only ones (steps, sampler) are ignored."""
        if num_samples < 1:
            raise ValueError(f"num_samples={num_samples} must be >= 1")
        if unused.get("sources") is not None:
            raise ValueError(f"model {self.cfg.name!r} (recipe=ar) is unconditional and cannot read sources")
        generator = torch.Generator().manual_seed(self.cfg.sample.seed if seed is None else seed)
        batch_size = batch_size or self.cfg.sample.batch_size
        texts = []
        for start in range(0, num_samples, batch_size):
            b = min(batch_size, num_samples - start)
            rows = self.generate_ids(b, generator=generator, temperature=temperature, top_p=top_p)
            texts += self.ids_to_texts(rows.cpu())
        return texts
