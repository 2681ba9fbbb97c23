"""Training configs: the examples validate, --set overrides, errors name field, value and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from taktline.errors import SpecError
from taktline.training.config import apply_overrides, bundled_configs, load_config


def test_every_bundled_training_example_validates() -> None:
    from importlib import resources

    import yaml

    names = bundled_configs()
    assert {"jobshop_10x10_attention.yaml", "bodyshop_dispatch.yaml"} <= set(names)
    folder = resources.files("taktline.training.configs")
    for name in names:
        if "search_space" in yaml.safe_load(folder.joinpath(name).read_text()):
            continue  # a Ray Tune sweep, validated by the sweep tests
        cfg = load_config(name)
        assert cfg.name and cfg.budget.total_timesteps > 0


def test_set_overrides_parse_yaml_values_at_dotted_paths() -> None:
    cfg = load_config(
        "bodyshop_dispatch",
        [
            "budget.total_timesteps=2e5",
            "env.kwargs.max_queue=12",
            "policy.kwargs.hidden=[32,32]",
            "hyperparameters.learning_rate=1e-4",
            "eval.baselines=[SPT]",
            "vec_env=dummy",
        ],
    )
    assert cfg.budget.total_timesteps == 200_000
    assert cfg.env.kwargs["max_queue"] == 12 and cfg.policy.kwargs["hidden"] == [32, 32]
    assert cfg.hyperparameters["learning_rate"] == pytest.approx(1e-4)
    assert cfg.eval.baselines == ["SPT"] and cfg.vec_env == "dummy"
    flat = cfg.flat()
    assert flat["env.kwargs.max_queue"] == 12 and flat["budget.total_timesteps"] == 200_000


def test_unknown_field_suggests_the_close_name() -> None:
    with pytest.raises(
        SpecError,
        match=r"budget.total_timestep: unknown field; did you mean "
        r"budget.total_timesteps\?",
    ):
        load_config("bodyshop_dispatch", ["budget.total_timestep=10"])


def test_bad_values_name_the_field_and_the_value() -> None:
    with pytest.raises(SpecError) as err:
        load_config("bodyshop_dispatch", ["n_envs=0", "algorithm=a2c"])
    msg = str(err.value)
    assert "n_envs: Input should be greater than or equal to 1 (got 0)" in msg
    assert "algorithm:" in msg and "'a2c'" in msg and "maskable_ppo" in msg


def test_cross_field_rules_say_the_fix() -> None:
    with pytest.raises(SpecError, match="use 'mlp' for taktline/LineDispatch-v0"):
        load_config("bodyshop_dispatch", ["policy.network=attention"])
    with pytest.raises(SpecError, match="unknown env id 'taktline/Nope-v0'; choose one of"):
        load_config("bodyshop_dispatch", ["env.id=taktline/Nope-v0"])


def test_file_and_syntax_errors(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no such file"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="cannot parse the YAML"):
        load_config(bad)
    with pytest.raises(SpecError, match="expected key=value"):
        apply_overrides({}, ["budget.total_timesteps"])
    empty = tmp_path / "noname.yaml"
    empty.write_text("env: {id: taktline/JobShop-v0}\n")
    with pytest.raises(SpecError, match="name: Field required"):
        load_config(empty)
