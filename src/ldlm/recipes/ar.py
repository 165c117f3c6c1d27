"""``recipe: ar``: the autoregressive baseline of issue 21, trained on the texts COSMOS trains on.

One stage, ``ar``: next-token cross-entropy of :class:`~ldlm.baselines.ar.ARLanguageModel` on the rows of
:func:`~ldlm.data.texts.load_run_texts` (``data.dataset`` minus its held-out split, plus ``data.train_extra``;
with ``data.diffusion_full_window`` only the texts that fill all ``encoder.max_length`` tokens, as COSMOS's
diffusion stage), tokenised by ``encoder.name``'s tokenizer. Trained by :class:`~ldlm.training.train.Trainer` with
``ar_train`` (Accelerate, EMA, checkpoints, ``--resume``); saves ``run_dir/model`` and ``run_dir/summary.json``.

    ldlm train ar_roc45k                # one process
    ldlm train ar_roc45k --resume       # continue an interrupted run from its newest checkpoint
    ldlm evaluate runs/ar_roc45k        # the same suite as a COSMOS run
"""

from __future__ import annotations

import logging
import math
import time
import warnings

import torch
from torch import nn

from ldlm.baselines.ar import ARLanguageModel, ARTransformer, lm_loss
from ldlm.config import RunConfig
from ldlm.data.registry import DatasetError
from ldlm.data.texts import load_run_texts, require_training_texts
from ldlm.training.runstate import RunStages
from ldlm.training.train import Trainer, infinite_batches

log = logging.getLogger(__name__)


class ARTask(nn.Module):
    """The Trainer's task: ``forward(batch, step) -> (loss, metrics)`` on rows ``input_ids``/``attention_mask``.
    Holds only the network (the tokenizer stays out of the EMA's deep copy)."""

    def __init__(self, net: ARTransformer, start_id: int, prepend: bool):
        super().__init__()
        self.net, self.start_id, self.prepend = net, start_id, prepend

    def forward(self, batch: dict, step: int) -> tuple[torch.Tensor, dict]:
        device = self.net.pos_emb.device
        ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        loss, info = lm_loss(self.net, ids, mask, self.start_id, self.prepend)
        return loss, {"loss": loss.item(), "acc": info["acc"]}


@torch.no_grad()
def heldout_loss(task: ARTask, ids: torch.Tensor, mask: torch.Tensor, batch_size: int = 256) -> dict[str, float]:
    """Token-level held-out NLL (nats per real target token, end token included) and its perplexity."""
    total, count = 0.0, 0
    device = task.net.pos_emb.device
    for s in range(0, ids.shape[0], batch_size):
        _, info = lm_loss(
            task.net, ids[s : s + batch_size].to(device), mask[s : s + batch_size].to(device), task.start_id,
            task.prepend,
        )  # fmt: skip
        total, count = total + info["nll_sum"], count + info["tokens"]
    loss = total / max(1, count)
    return {"loss": loss, "ppl": math.exp(min(loss, 50.0))}


def ar_rows(model: ARLanguageModel, texts: list[str], full_window: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded rows (n, L) of ``texts``; with ``full_window`` only the rows without padding (COSMOS's choice)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # truncation to L is expected (the same rows COSMOS reads)
        ids, mask = model.tokenize(texts)
    ids, mask = ids.cpu(), mask.cpu()
    if full_window:
        keep = mask.sum(1) == model.max_length
        ids, mask = ids[keep], mask[keep]
    return ids, mask


def train_lm(model: ARLanguageModel, train: list[str], valid: list[str], cfg: RunConfig, progress: bool) -> dict:
    """The one stage: next-token CE on the training rows, validated on the held-out rows (EMA weights)."""
    start = time.perf_counter()
    full = cfg.data.diffusion_full_window
    ids, mask = ar_rows(model, train, full)
    if ids.shape[0] == 0:
        raise DatasetError(f"no training rows: none of {len(train)} texts fills encoder.max_length={model.max_length}")
    v_ids, v_mask = ar_rows(model, valid, full) if valid else (ids[:512], mask[:512])
    log.info("ar: %d training rows, %d held-out rows (full_window=%s)", ids.shape[0], v_ids.shape[0], full)
    tc = cfg.ar_train
    task = ARTask(model.net, model.start_id, model.prepend_start)
    trainer = Trainer(task, tc, log_dir=cfg.run_dir / "ar", name="ar", progress=progress)
    batches = infinite_batches(
        ids.shape[0], tc.batch_size, lambda idx: {"input_ids": ids[idx], "attention_mask": mask[idx]}, cfg.seed
    )
    eval_ids, eval_mask = v_ids[: tc.eval_batches * 64], v_mask[: tc.eval_batches * 64]
    trainer.fit(batches, lambda t: heldout_loss(t, eval_ids, eval_mask))
    model.eval()
    val = heldout_loss(task, v_ids, v_mask)
    return {
        "ar_minutes": (time.perf_counter() - start) / 60,
        "ar_train_rows": int(ids.shape[0]),
        "ar_valid_rows": int(v_ids.shape[0]),
        "val_loss": val["loss"],
        "val_ppl": val["ppl"],
    }


def train_ar(cfg: RunConfig, *, progress: bool = True, model: ARLanguageModel | None = None, resume: bool = False):
    """Train the AR baseline; save ``run_dir/model`` and ``run_dir/summary.json``; return (model, summary).
    ``resume``: a finished stage is restored, an interrupted one continues from its newest checkpoint."""
    stages = RunStages(cfg, resume=resume)  # run_dir, config.json (rank 0) and the stage snapshot
    torch.manual_seed(cfg.seed)
    data = load_run_texts(cfg.data)
    require_training_texts(data, cfg.data)
    model = model or ARLanguageModel(cfg)
    summary = {
        "name": cfg.name,
        "recipe": "ar",
        "train_texts": len(data.train),
        "valid_texts": len(data.valid),
        "parameters": model.num_parameters(),
    }
    summary.update(stages.run("ar", model, lambda: train_lm(model, data.train, data.valid, cfg, progress)))
    summary["train_minutes"] = summary["ar_minutes"]
    return model, stages.finish(model, summary)
