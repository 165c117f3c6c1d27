"""`ldlm train ldlm_tiny` end to end (joint stage, checkpoint, token-decoder post-training), then `ldlm sample` and
`LatentDiffusionLM.from_pretrained` on the result; a bad config fails before anything is written."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
import torch
from safetensors import safe_open

from ldlm.cli import main
from ldlm.pipeline import LatentDiffusionLM


@pytest.fixture(scope="module")
def ldlm_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ldlm_run")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["train", "ldlm_tiny", f"output_dir={root}/{{name}}", "--quiet"])
    assert rc == 0, err.getvalue()
    return root / "ldlm_tiny", out.getvalue()


def test_train_writes_model_summary_and_logs(ldlm_run):
    run_dir, stdout = ldlm_run
    summary = json.loads(stdout[stdout.index("{\n") :])
    assert summary == json.loads((run_dir / "summary.json").read_text())
    assert summary["recipe"] == "ldlm" and summary["train_rows"] > 0
    for key in ("heldout_token_accuracy", "heldout_mse", "heldout_diffusion_loss", "joint_minutes", "decoder_minutes"):
        assert key in summary
    assert 0 <= summary["heldout_head_accuracy_true_h"] <= 1  # the token decoder on the true h, for comparison
    rows = [json.loads(line) for line in (run_dir / "joint" / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "loss" in r]
    assert train_rows[-1]["step"] == 20 and {"diff", "mse", "ce", "gamma", "latent_std"} <= set(train_rows[-1])
    assert train_rows[0]["gamma"] < 1.0 == train_rows[-1]["gamma"]  # S_wu=10 of 20 steps
    assert any("val_diffusion_loss" in r for r in rows)
    decoder_rows = (run_dir / "decoder" / "metrics.jsonl").read_text().splitlines()
    assert json.loads(decoder_rows[0])["step"] == 5  # App. B.2 post-training ran


def test_checkpoint_holds_the_adaptive_sampler_state(ldlm_run):
    run_dir, _ = ldlm_run
    ckpt = run_dir / "joint" / "checkpoints" / "step_00000010"
    assert json.loads((ckpt / "state.json").read_text())["step"] == 10
    with safe_open(str(ckpt / "model.safetensors"), "pt") as f:
        assert {"timesteps.probs", "timesteps.edge_loss", "timesteps.updates"} <= set(f.keys())
        assert f.get_tensor("timesteps.updates").item() == 10
        probs = f.get_tensor("timesteps.probs")
    assert not torch.allclose(probs, torch.full_like(probs, 1 / probs.numel()))  # refreshed every 5 updates


def test_result_loads_and_samples(ldlm_run, tmp_path, capsys):
    run_dir, _ = ldlm_run
    model = LatentDiffusionLM.from_pretrained(run_dir)
    assert model.cfg.recipe == "ldlm" and len(model.autoencoder.token_blocks) == 1
    assert torch.equal(model.latent_mean, torch.zeros_like(model.latent_mean))  # diffusion on the raw z0
    texts = model.generate(2, steps=4, seed=0)
    assert len(texts) == 2 and texts == model.generate(2, steps=4, seed=0)
    assert model.encode(["the market rose sharply."]).shape == (1, *model.latent_shape)
    out = tmp_path / "samples.txt"
    assert main(["sample", str(run_dir), "-n", "2", "--steps", "4", "--out", str(out)]) == 0
    assert out.read_text().splitlines() == texts
    assert "wrote 2 samples" in capsys.readouterr().err


def test_packed_model_decodes_every_segment(ldlm_run):
    model = LatentDiffusionLM.from_pretrained(ldlm_run[0])
    tok = model.encoder.tokenizer
    sep = tok.sep_token_id  # MiniLM packs with SEP between texts
    row = tok.convert_tokens_to_ids(["the", "cat"]) + [sep] + tok.convert_tokens_to_ids(["a", "dog"]) + [sep]
    assert model.ids_to_texts(torch.tensor([row])) == ["the cat a dog"]


def test_bad_config_fails_before_training(tmp_path, capsys):
    rc = main(["train", "ldlm_tiny", f"output_dir={tmp_path}/{{name}}", "encoder.layer=-9", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "encoder.layer=-9" in err and "Traceback" not in err
    assert not (tmp_path / "ldlm_tiny").exists()
    rc = main(["train", "ldlm_tiny", f"output_dir={tmp_path}/{{name}}", "joint.sigma_dec=-1", "--quiet"])
    assert rc == 2 and "joint.sigma_dec" in capsys.readouterr().err
