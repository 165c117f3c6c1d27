"""The ``ldlm`` command line: train, sample, configs, and one-line errors for bad inputs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import ldlm
from ldlm.cli import main


def _one_error(stderr: str, command: str) -> str:
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, stderr
    assert errors[0].startswith(f"ldlm {command}: error: ")
    return errors[0]


def test_train_command(tiny_run):
    """`ldlm train tiny output_dir=... --quiet` (run once for the session by the tiny_run fixture)."""
    assert tiny_run.rc == 0
    model_dir = tiny_run.run_dir / "model"
    assert (model_dir / "config.json").is_file() and (model_dir / "model.safetensors").is_file()
    assert json.loads((model_dir / "config.json").read_text())["name"] == "tiny"
    summary = json.loads(tiny_run.stdout[tiny_run.stdout.index("{\n") :])  # the summary JSON comes last
    assert summary == json.loads((tiny_run.run_dir / "summary.json").read_text())
    # provenance: the commit whose code trained the run (None outside a git checkout, e.g. a wheel install)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(ldlm.__file__).parent, capture_output=True, text=True)
    expected = head.stdout.strip() if head.returncode == 0 else None
    assert summary["code"]["git_commit"] == expected and summary["code"]["version"] == ldlm.__version__
    assert "Traceback" not in tiny_run.stderr
    assert not re.search(r"(autoencoder|diffusion|head):\s+\d+%\|", tiny_run.stderr)  # --quiet: no bars


def test_sample_command_writes_lines(tiny_run, tmp_path, capsys):
    out = tmp_path / "samples.txt"
    rc = main(["sample", str(tiny_run.run_dir), "-n", "3", "--steps", "5", "--out", str(out)])
    assert rc == 0
    lines = out.read_text().split("\n")
    assert lines[-1] == "" and len(lines[:-1]) == 3
    captured = capsys.readouterr()
    printed = [line for line in captured.out.splitlines() if line.startswith("[")]
    assert [line.split("] ", 1)[0] for line in printed] == ["[0", "[1", "[2"]
    assert "wrote 3 samples" in captured.err
    # same seed, same texts; the model dir itself works as well as the run dir
    out2 = tmp_path / "again.txt"
    rc = main(["sample", str(tiny_run.run_dir / "model"), "-n", "3", "--steps", "5", "--out", str(out2)])
    assert rc == 0 and out2.read_text() == out.read_text()
    rc = main(["sample", str(tiny_run.run_dir), "-n", "3", "--steps", "5", "--sampler", "ddim", "--seed", "4"])
    assert rc == 0


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["train", "tiny", "autoencoder.num_latent=8"], ["num_latent", "Did you mean 'num_latents'?"]),
        (["train", "tiny", "autoencoder_train.lr"], ["key.sub=value"]),
        (["train", "tiyn"], ["'tiyn'", "Did you mean 'tiny'?"]),
        (["train", "tiny", "autoencoder.mask_prob=1.5"], ["autoencoder.mask_prob"]),
        (["train", "tiny", "autoencoder.num_latents=abc"], ["autoencoder.num_latents"]),
    ],
)
def test_bad_train_inputs_give_one_clear_error(argv, expected, tmp_path, capsys):
    rc = main([*argv, f"output_dir={tmp_path}/{{name}}", "--quiet"])
    assert rc != 0
    captured = capsys.readouterr()
    line = _one_error(captured.err, "train")
    for word in expected:
        assert word in line
    assert not (tmp_path / "tiny").exists()  # config errors are caught before anything is written


def test_unknown_dataset_gives_one_clear_error(tmp_path, capsys):
    rc = main(["train", "tiny", "data.dataset=nosuchset", f"output_dir={tmp_path}/{{name}}", "--quiet"])
    assert rc != 0
    line = _one_error(capsys.readouterr().err, "train")
    assert "nosuchset" in line and "news" in line  # names the bad value and the known ones


def test_sample_on_empty_dir_gives_one_clear_error(tmp_path, capsys):
    rc = main(["sample", str(tmp_path), "-n", "2"])
    assert rc != 0
    line = _one_error(capsys.readouterr().err, "sample")
    assert str(tmp_path) in line and "config.json" in line


def test_sample_on_pickle_file_dir_is_refused(tiny_run, tmp_path, capsys):
    (tmp_path / "config.json").write_text((tiny_run.run_dir / "model" / "config.json").read_text())
    (tmp_path / "model.bin").write_bytes(b"pickle")
    rc = main(["sample", str(tmp_path), "-n", "2"])
    assert rc != 0
    assert "model.bin" in _one_error(capsys.readouterr().err, "sample")


def test_sample_with_unknown_sampler_gives_one_clear_error(tiny_run, capsys):
    rc = main(["sample", str(tiny_run.run_dir), "-n", "1", "--steps", "1", "--sampler", "nosuch"])
    assert rc != 0
    assert "nosuch" in _one_error(capsys.readouterr().err, "sample")


def test_sample_with_zero_samples_gives_one_clear_error(tiny_run, capsys):
    rc = main(["sample", str(tiny_run.run_dir), "-n", "0"])
    assert rc != 0
    _one_error(capsys.readouterr().err, "sample")


def test_bad_encoder_layer_gives_one_clear_error(tmp_path, capsys):
    rc = main(["train", "tiny", "encoder.layer=99", f"output_dir={tmp_path}/{{name}}", "--quiet"])
    assert rc != 0
    assert "encoder.layer" in _one_error(capsys.readouterr().err, "train")


def test_usage_errors_exit_nonzero(capsys):
    with pytest.raises(SystemExit) as err:
        main([])
    assert err.value.code != 0
    with pytest.raises(SystemExit) as err:
        main(["sample"])  # RUN_DIR missing
    assert err.value.code != 0


def test_configs_command_in_process(capsys):
    assert main(["configs"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert {"tiny", "quickstart", "cosmos_roc_cpu"} <= set(names)


def test_console_script_configs():
    exe = shutil.which("ldlm")
    cmd = [exe, "configs"] if exe else [sys.executable, "-m", "ldlm.cli", "configs"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert any(line.startswith("tiny ") and "Smallest end-to-end" in line for line in lines)
    assert any(line.startswith("quickstart ") for line in lines)


@pytest.mark.parametrize("text", ["", "# only a comment\n"])
def test_empty_config_file_gives_one_clear_error(text, tmp_path, capsys):
    """An empty YAML file is an error, not a run of every default (which would encode the whole news corpus)."""
    path = tmp_path / "empty.yaml"
    path.write_text(text)
    rc = main(["train", str(path), f"output_dir={tmp_path}/{{name}}", "--quiet"])
    assert rc == 2
    line = _one_error(capsys.readouterr().err, "train")
    assert "empty.yaml is empty" in line
    assert not (tmp_path / "ldlm").exists() and len(list(tmp_path.iterdir())) == 1  # nothing was written


def test_nonfinite_loss_gives_one_clear_error(tmp_path, capsys, monkeypatch):
    """A NaN loss under on_nonfinite=stop (the default) ends the run with one line and exit code 2, no traceback."""
    from ldlm.training import train

    real_init = train.Trainer.__init__

    def nan_from_step_1(self, task, *args, **kwargs):
        def hook(module, inputs, output):  # the task is called as task(batch, step) -> (loss, metrics)
            loss, metrics = output
            return (loss * float("nan"), metrics) if inputs[1] >= 1 else output

        task.register_forward_hook(hook)
        real_init(self, task, *args, **kwargs)

    monkeypatch.setattr(train.Trainer, "__init__", nan_from_step_1)
    rc = main(["train", "tiny", f"output_dir={tmp_path}/{{name}}", "--quiet"])
    assert rc == 2
    line = _one_error(capsys.readouterr().err, "train")
    assert "non-finite loss" in line and "at step 1" in line and "on_nonfinite=skip" in line


def test_options_are_not_abbreviated(capsys):
    """`ldlm probe loss-t RUN --out x.json` once made a folder named x.json (argparse read --out as --out-dir)."""
    with pytest.raises(SystemExit) as exc:
        main(["probe", "loss-t", "runs/none", "--out", "x.json"])
    assert exc.value.code == 2 and "unrecognized arguments: --out" in capsys.readouterr().err
