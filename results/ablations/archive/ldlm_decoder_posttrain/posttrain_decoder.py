"""Exploration: post-train a 2-block token decoder (LDLM App. B.2) on the frozen ldlm_table1 MSE seed-0 system."""

import json
import sys
import time
from pathlib import Path

import torch

from ldlm.checkpoint import read_checkpoint
from ldlm.config import config_from_dict
from ldlm.pipeline import LatentDiffusionLM
from ldlm.recipes.decoder import train_token_decoder
from ldlm.recipes.ldlm import joint_validation, training_sources

src = Path(sys.argv[1])
layers = int(sys.argv[2])
steps = int(sys.argv[3])
d = json.loads((src / "config.json").read_text())
d["autoencoder"].update(token_decoder_layers=layers, token_decoder_heads=8, freeze_head_steps=steps // 2)
d["decoder_train"] = {**d["joint_train"], "steps": steps, "warmup_steps": 50, "eval_every": steps // 3, "log_every": 50}
out = Path(f"/tmp/dec_exp/{src.parent.name}_L{layers}_{steps}")
d["output_dir"] = str(out)
cfg = config_from_dict(d)
torch.manual_seed(0)
model = LatentDiffusionLM(cfg)
_, parts = read_checkpoint(src / "stages" / "joint")
missing, unexpected = model.load_state_dict(parts["model"], strict=False)
print("missing", [k for k in missing if not k.startswith("encoder.model.")][:4], "unexpected", unexpected[:4])
train, valid, *_ = training_sources(model, cfg)
before = joint_validation(model, model.autoencoder, model.denoiser, valid, max_rows=len(valid), true_h=True)
print("before", before, flush=True)
t = time.time()
train_token_decoder(model, train, valid, cfg, out, progress=False)
after = joint_validation(model, model.autoencoder, model.denoiser, valid, max_rows=len(valid), true_h=True)
print("after", after, f"{(time.time() - t) / 60:.1f} min", flush=True)
json.dump(
    {"src": str(src), "layers": layers, "steps": steps, "before": before, "after": after},
    open(out / "result.json", "w"),
)
