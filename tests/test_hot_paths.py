"""Issue 6's fast paths: one decode after the last step under inference mode, vocabulary argmax without the full
logits, bf16 autocast and torch.compile as GPU-only options (validated; off changes nothing), peak-RSS helpers."""

from __future__ import annotations

import dataclasses
import json
import time

import pytest
import torch
from torch import nn

from ldlm.config import ConfigError, DiffusionConfig, TrainConfig, load_config, validate
from ldlm.diffusion import build_denoiser, build_schedule, sample_latents
from ldlm.model.autoencoder import head_argmax
from ldlm.training.accel import compile_denoiser, sampling_autocast
from ldlm.training.memory import peak_rss_gib, reset_peak_rss, status_gib

# ----------------------------------------------------------------------------- decoding


@pytest.mark.parametrize("rows", [1, 7, 1024])
def test_head_argmax_equals_the_full_logits_argmax(rows):
    torch.manual_seed(0)
    head, h = nn.Linear(16, 3000), torch.randn(3, 5, 16)
    assert torch.equal(head_argmax(head, h, rows=rows), head(h).argmax(-1))


def test_generate_denoises_under_inference_mode_and_decodes_once(tiny_run):
    model = tiny_run.model
    seen = {"inference": [], "decoder": [], "head_rows": []}
    ae = model.autoencoder
    hooks = [
        model.denoiser.register_forward_hook(lambda *_: seen["inference"].append(torch.is_inference_mode_enabled())),
        ae.decompressor.register_forward_hook(lambda m, args, out: seen["decoder"].append(out.shape)),
        ae.head.register_forward_hook(lambda m, args, out: seen["head_rows"].append(args[0].shape[0])),
    ]
    try:
        texts = model.generate(4, steps=5, batch_size=4)
    finally:
        for hook in hooks:
            hook.remove()
    assert len(texts) == 4
    assert seen["inference"] == [True] * 5  # one denoiser call per step, all under inference mode
    assert len(seen["decoder"]) == 1  # the latent decoder runs once, after the last step
    assert sum(seen["head_rows"]) == 4 * model.max_length  # the vocabulary head sees each output position once


# ----------------------------------------------------------------------------- bf16 autocast (GPU only)


def test_sampling_autocast_is_bf16_on_gpu_only():
    assert sampling_autocast("auto", "cpu") is None
    assert sampling_autocast("auto", "cuda") is torch.bfloat16
    assert sampling_autocast("no", "cuda") is None
    assert sampling_autocast("bf16", "cpu") is torch.bfloat16


def _tiny_denoiser() -> nn.Module:
    torch.manual_seed(0)
    cfg = DiffusionConfig(denoiser="dit", layers=1, width=32, heads=2)
    return build_denoiser(cfg, latent_dim=8, num_latents=4).eval()


def test_autocast_sampling_keeps_a_float32_state_and_off_changes_nothing():
    denoiser, schedule = _tiny_denoiser(), build_schedule("tan", 5.0, 0.999)
    run = lambda **kw: sample_latents(
        denoiser, schedule, (2, 4, 8), steps=4, generator=torch.Generator().manual_seed(0), **kw
    )
    plain = run()
    assert torch.equal(run(autocast=None), plain)
    bf16 = run(autocast=torch.bfloat16)
    assert bf16.dtype == torch.float32
    assert torch.allclose(bf16, plain, atol=0.1)


# ----------------------------------------------------------------------------- torch.compile (GPU only)


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("diffusion_train.compile=maybe", "diffusion_train.compile"),
        ("joint_train.compile=1", "joint_train.compile"),
        ("sample.compile=yes please", "sample.compile"),
        ("sample.mixed_precision=fp16", "sample.mixed_precision"),
    ],
)
def test_compile_and_precision_flags_are_validated(override, field):
    with pytest.raises(ConfigError, match=field):
        load_config("tiny", [override])


def test_compile_flag_set_in_code_is_validated():
    cfg = load_config("tiny")
    bad = dataclasses.replace(cfg, diffusion_train=dataclasses.replace(cfg.diffusion_train, compile="yes"))
    with pytest.raises(ConfigError, match="diffusion_train.compile='yes': use true | false"):
        validate(bad)
    assert load_config("tiny", ["sample.compile=true", "diffusion_train.compile=true"]).sample.compile is True


def test_compile_on_cpu_warns_once_per_call_and_stays_eager():
    module = nn.Linear(4, 4)
    with pytest.warns(UserWarning, match=r"sample.compile=true is GPU-only"):
        assert not compile_denoiser(module, enabled=True, device="cpu", field="sample.compile")
    assert not hasattr(module, "_ldlm_compiled")


def test_compile_on_gpu_compiles_in_place_once(monkeypatch):
    calls = []
    monkeypatch.setattr(nn.Module, "compile", lambda self, *a, **kw: calls.append(self))
    module = nn.Linear(4, 4)
    keys = list(module.state_dict())
    assert compile_denoiser(module, enabled=True, device="cuda", field="sample.compile")
    assert compile_denoiser(module, enabled=True, device="cuda", field="sample.compile")
    assert calls == [module] and list(module.state_dict()) == keys
    assert not compile_denoiser(nn.Linear(4, 4), enabled=False, device="cuda", field="sample.compile")
    assert not compile_denoiser(None, enabled=True, device="cuda", field="sample.compile")


class _DenoiserTask(nn.Module):
    def __init__(self):
        super().__init__()
        self.denoiser = nn.Linear(3, 1)

    def forward(self, batch, step):
        loss = ((self.denoiser(batch["x"]) - batch["y"]) ** 2).mean()
        return loss, {"loss": loss.item()}


def _fit(tmp_path, compile_flag: bool) -> nn.Module:
    from ldlm.training.train import Trainer

    torch.manual_seed(0)
    task = _DenoiserTask()
    tcfg = TrainConfig(steps=3, batch_size=4, warmup_steps=0, eval_every=10**9, log_every=1, save_every=0)
    tcfg = dataclasses.replace(tcfg, compile=compile_flag, mixed_precision="no")
    x = torch.randn(8, 3)
    batches = iter([{"x": x[i : i + 4], "y": x[i : i + 4, :1]} for i in (0, 4, 0)])
    Trainer(task, tcfg, log_dir=tmp_path / str(compile_flag), name="diffusion", progress=False).fit(batches)
    return task


def test_trainer_compile_on_cpu_warns_and_trains_exactly_as_without(tmp_path):
    plain = _fit(tmp_path, compile_flag=False)
    with pytest.warns(UserWarning, match=r"diffusion_train.compile=true is GPU-only"):
        flagged = _fit(tmp_path, compile_flag=True)
    for a, b in zip(plain.state_dict().values(), flagged.state_dict().values(), strict=True):
        assert torch.equal(a, b)


# ----------------------------------------------------------------------------- memory


@pytest.mark.skipif(status_gib("VmHWM") is None, reason="needs /proc/self/status (Linux)")
def test_peak_rss_reset_gives_a_local_peak_but_keeps_the_life_peak():
    block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
    high = status_gib("VmHWM")
    del block
    if not reset_peak_rss():
        pytest.skip("/proc/self/clear_refs is not writable here")
    assert status_gib("VmHWM") < high - 0.03  # the 64 MiB block is gone from the new peak
    assert peak_rss_gib(children=False) >= high - 0.01  # (Linux counts RSS per thread, to a few hundred KiB)


def test_bench_reads_the_quickstart_peak_rss(tmp_path):
    from ldlm.apps.bench.benchmarks import quickstart_rss

    report = tmp_path / "quickstart.json"
    value, note = quickstart_rss(report)
    assert value is None and "not found" in note
    report.write_text(json.dumps({"wall_minutes": 12.0}))
    value, note = quickstart_rss(report)
    assert value is None and "re-run `ldlm quickstart`" in note
    report.write_text(json.dumps({"peak_rss_gib": 2.5}))
    assert quickstart_rss(report)[0] == 2.5


def test_quickstart_report_records_peak_rss_and_passes_heldout_texts(tiny_run, tmp_path, monkeypatch):
    import ldlm.evaluation.untrained
    from ldlm.apps.quickstart import report_run
    from ldlm.data.texts import load_run_texts

    judged = {
        "samples": ["a story."],
        "judge": "stub",
        "judge_ppl_trained": 10.0,
        "judge_ppl_untrained": 20.0,
        "trained_stats": {"entropy": 1.0},
        "untrained_stats": {"entropy": 2.0},
    }
    seen = {}
    monkeypatch.setattr(
        ldlm.evaluation.untrained, "judge_against_untrained", lambda *a, **kw: seen.update(kw) or judged
    )
    out = tmp_path / "quickstart.json"
    result = report_run(tiny_run.model, out, config="tiny", started=time.perf_counter())
    assert 0 < result["peak_rss_gib"] < 64
    assert json.loads(out.read_text())["peak_rss_gib"] == result["peak_rss_gib"]
    # real held-out texts are judged beside the samples
    assert seen["reference_texts"] == load_run_texts(tiny_run.cfg.data).valid
