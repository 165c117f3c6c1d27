"""Run configuration: presets, inheritance, dotted overrides, validation and the papers' defaults."""

from __future__ import annotations

import json

import pytest

from ldlm.config import (
    ConfigError,
    RunConfig,
    config_from_dict,
    list_presets,
    load_config,
    parse_override,
)


def test_tiny_preset_loads_with_its_values():
    cfg = load_config("tiny")
    assert isinstance(cfg, RunConfig)
    assert cfg.name == "tiny"
    assert cfg.encoder.max_length == 24
    assert cfg.autoencoder.num_latents == 4 and cfg.autoencoder.width == 64
    assert cfg.autoencoder.head_init == "centroid"
    assert cfg.diffusion.layers == 2
    assert cfg.autoencoder_train.steps == 20 and cfg.autoencoder_train.lr == pytest.approx(1e-3)
    # keys the preset does not name keep the dataclass defaults
    assert cfg.autoencoder.mask_prob == 0.3
    assert cfg.diffusion_train.betas == (0.9, 0.98)


def test_every_shipped_preset_is_valid():
    presets = list_presets()
    assert {"tiny", "quickstart", "cosmos_roc_cpu"} <= set(presets)
    for name in presets:
        assert load_config(name).name == name


def test_preset_by_yaml_path(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nautoencoder: {num_latents: 2, width: 32, heads: 4}\n")
    cfg = load_config(path)
    assert cfg.name == "mine" and cfg.autoencoder.num_latents == 2 and cfg.autoencoder.width == 32
    assert load_config(str(path)).autoencoder.heads == 4


def test_base_inheritance_deep_merges(tmp_path):
    path = tmp_path / "child.yaml"
    path.write_text("base: tiny\nname: child\nautoencoder: {num_latents: 2}\nautoencoder_train: {lr: 5.0e-4}\n")
    cfg = load_config(path)
    tiny = load_config("tiny")
    assert cfg.name == "child"
    assert cfg.autoencoder.num_latents == 2  # overridden
    assert cfg.autoencoder.width == tiny.autoencoder.width == 64  # inherited sibling key
    assert cfg.autoencoder.locality_bias == tiny.autoencoder.locality_bias
    assert cfg.autoencoder_train.lr == pytest.approx(5e-4)
    assert cfg.autoencoder_train.steps == tiny.autoencoder_train.steps
    assert cfg.encoder == tiny.encoder


def test_base_chain_and_cycle(tmp_path):
    (tmp_path / "a.yaml").write_text("base: tiny\nname: a\nseed: 3\n")
    (tmp_path / "b.yaml").write_text(f"base: {tmp_path / 'a.yaml'}\nname: b\n")
    cfg = load_config(tmp_path / "b.yaml")
    assert cfg.name == "b" and cfg.seed == 3 and cfg.autoencoder.width == 64
    (tmp_path / "x.yaml").write_text(f"base: {tmp_path / 'y.yaml'}\n")
    (tmp_path / "y.yaml").write_text(f"base: {tmp_path / 'x.yaml'}\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "x.yaml")


def test_overrides_are_coerced_to_the_field_types():
    cfg = load_config(
        "tiny",
        [
            "autoencoder_train.lr=1e-4",  # YAML reads '1e-4' as a string: must become a float
            "autoencoder.num_latents=8",
            "autoencoder.mask_prob=0",  # int -> float field
            "data.max_texts=1e3",  # integral float -> int field
            "data.autoencoder_extra=[news, rocstories]",
            "diffusion_train.betas=[0.8, 0.95]",
            "data.cache_features=false",
            "name=other",
        ],
    )
    assert cfg.autoencoder_train.lr == 1e-4 and type(cfg.autoencoder_train.lr) is float
    assert cfg.autoencoder.num_latents == 8 and type(cfg.autoencoder.num_latents) is int
    assert cfg.autoencoder.mask_prob == 0.0 and type(cfg.autoencoder.mask_prob) is float
    assert cfg.data.max_texts == 1000 and type(cfg.data.max_texts) is int
    assert cfg.data.autoencoder_extra == ["news", "rocstories"]
    assert cfg.diffusion_train.betas == (0.8, 0.95) and isinstance(cfg.diffusion_train.betas, tuple)
    assert cfg.data.cache_features is False
    assert cfg.name == "other"
    # later overrides win, and the other stage is untouched
    cfg = load_config("tiny", ["autoencoder_train.lr=1e-4", "autoencoder_train.lr=3e-4"])
    assert cfg.autoencoder_train.lr == pytest.approx(3e-4)
    assert cfg.diffusion_train.lr == pytest.approx(1e-3)


@pytest.mark.parametrize("sampler", ["euler", "euler_maruyama", "ddim", "ddpm", "dpmpp_2m"])
def test_every_sampler_is_a_valid_sample_sampler(sampler):
    assert load_config("tiny", [f"sample.sampler={sampler}"]).sample.sampler == sampler


def test_override_none_for_optional_field():
    cfg = load_config("tiny", ["data.max_texts=null", "autoencoder.latent_dim=32"])
    assert cfg.data.max_texts is None and cfg.autoencoder.latent_dim == 32


def test_parse_override_structure():
    assert parse_override("a.b.c=1") == {"a": {"b": {"c": 1}}}
    assert parse_override("x=1e-4") == {"x": 1e-4}
    assert parse_override("x=[1, 2]") == {"x": [1, 2]}
    assert parse_override("x=a=b") == {"x": "a=b"}  # only the first '=' splits


def test_a_runs_config_json_loads_back_as_a_config(tmp_path):
    """``ldlm train RUN/config.json``: JSON writes 1e-08, which YAML 1.1 reads as a string, in float fields."""
    cfg = load_config("tiny", ["autoencoder_train.eps=1e-8", "name=back"])
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg.to_dict()))
    assert '"eps": 1e-08' in path.read_text()
    again = load_config(path)
    assert again == cfg and type(again.autoencoder_train.eps) is float
    path.write_text(path.read_text().replace('"eps": 1e-08', '"eps": "fast"'))
    with pytest.raises(ConfigError, match=r"autoencoder_train\.eps: expected a number, got 'fast'"):
        load_config(path)


def test_override_without_equals_is_rejected():
    with pytest.raises(ConfigError, match="key.sub=value"):
        load_config("tiny", ["autoencoder_train.lr"])


def test_unknown_key_names_it_and_suggests_close_match():
    with pytest.raises(ConfigError) as err:
        load_config("tiny", ["autoencoder.num_latent=8"])
    msg = str(err.value)
    assert "'autoencoder.num_latent'" in msg and "Did you mean 'num_latents'?" in msg
    with pytest.raises(ConfigError) as err:
        load_config("tiny", ["autoencoder_trian.lr=1e-4"])
    assert "'autoencoder_trian'" in str(err.value) and "'autoencoder_train'" in str(err.value)


def test_unknown_key_in_yaml_is_rejected(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("diffusion: {layerz: 3}\n")
    with pytest.raises(ConfigError, match=r"diffusion\.layerz.*'layers'"):
        load_config(path)


@pytest.mark.parametrize(
    "override, field",
    [
        ("autoencoder.num_latents=abc", "autoencoder.num_latents"),
        ("autoencoder.num_latents=2.5", "autoencoder.num_latents"),
        ("autoencoder_train.lr=fast", "autoencoder_train.lr"),
        ("data.cache_features=3", "data.cache_features"),
        ("diffusion_train.betas=[0.9]", "diffusion_train.betas"),
        ("data.autoencoder_extra=news", "data.autoencoder_extra"),
        ("autoencoder=3", "autoencoder"),
    ],
)
def test_wrong_type_names_the_field(override, field):
    with pytest.raises(ConfigError) as err:
        load_config("tiny", [override])
    assert field in str(err.value)


@pytest.mark.parametrize(
    "override, words",
    [
        ("autoencoder.heads=5", ["autoencoder.width=64", "heads=5"]),
        ("diffusion.heads=3", ["diffusion.width=64", "heads=3"]),
        ("autoencoder.mask_prob=1.5", ["autoencoder.mask_prob=1.5"]),
        ("autoencoder.noise_delta=0", ["autoencoder.noise_delta"]),
        ("autoencoder.latent_dropout=1.0", ["autoencoder.latent_dropout"]),
        ("autoencoder.kl_weight=-1", ["autoencoder.kl_weight"]),
        ("sample.sampler=heun", ["sample.sampler"]),
        ("sample.steps=0", ["sample.steps"]),
        ("diffusion.schedule=linear", ["diffusion.schedule"]),
        ("diffusion.t_max=1.0", ["diffusion.t_max"]),
        ("diffusion.self_condition_prob=2", ["self_condition_prob"]),
        ("autoencoder_train.ema_decay=1.0", ["autoencoder_train.ema_decay"]),
        ("diffusion_train.lr=0", ["diffusion_train.lr"]),
        ("diffusion_train.grad_accum=3", ["diffusion_train.batch_size", "grad_accum"]),
        ("autoencoder.head_init=zeros", ["autoencoder.head_init"]),
        ("recipe=plaid", ["recipe"]),
    ],
)
def test_validation_errors_name_the_field(override, words):
    with pytest.raises(ConfigError) as err:
        load_config("tiny", [override])
    for word in words:
        assert word in str(err.value)


def test_unknown_preset_suggests_close_name():
    with pytest.raises(ConfigError) as err:
        load_config("tiyn")
    msg = str(err.value)
    assert "'tiyn'" in msg and "Did you mean 'tiny'?" in msg and "quickstart" in msg


def test_config_round_trips_through_dict():
    cfg = load_config("tiny", ["autoencoder_train.betas=[0.8, 0.9]"])
    data = cfg.to_dict()
    import json

    again = config_from_dict(json.loads(json.dumps(data)))  # tuples become lists in JSON
    assert again == cfg


def test_run_dir_formats_the_name(tmp_path):
    cfg = load_config("tiny", [f"output_dir={tmp_path}/{{name}}-x"])
    assert cfg.run_dir == tmp_path / "tiny-x"


def test_paper_defaults_cosmos_table_7():
    cfg = RunConfig()
    for tc in (cfg.autoencoder_train, cfg.diffusion_train):
        assert tc.lr == 2e-4
        assert tc.betas == (0.9, 0.98)
        assert tc.weight_decay == 0.01
        assert tc.warmup_steps == 1000
        assert tc.lr_schedule == "constant"
        assert tc.grad_clip == 1.0
        assert tc.ema_decay == 0.9999
        assert tc.batch_size == 1024
    assert cfg.sample.steps == 200 and cfg.sample.sampler == "euler"
    ae = cfg.autoencoder
    assert (ae.mask_prob, ae.noise_delta, ae.latent_dropout) == (0.3, 0.7, 0.4)
    assert ae.kl_weight == 0.0 and ae.locality_bias == 0.0  # paper: deterministic AE, no locality prior
    assert (ae.augment_start_step, ae.augment_ramp_steps) == (0, 0)  # paper: augmentations always on
    assert (ae.ce_positions, ae.ce_negatives) == (0, 0)  # paper: exact CE
    diff = cfg.diffusion
    assert diff.self_condition_prob == 0.5
    assert diff.schedule == "tan" and diff.t_max < 1.0
