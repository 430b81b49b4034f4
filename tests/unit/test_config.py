from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.errors import ConfigCompositionException

from selfreward.config import ConfigError, check, register

EXPERIMENTS = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "conf" / "experiment").glob("*.yaml"))
register()


def compose_cfg(*overrides):
    with initialize_config_module("selfreward.conf", version_base=None):
        return compose("config", overrides=list(overrides))


def test_default_composes_and_checks():
    cfg = compose_cfg()
    check(cfg)
    assert cfg.sampling.k == 8 and cfg.model.path == "builtin" and cfg.iterations >= 3


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes(name):
    cfg = compose_cfg(f"+experiment={name}")
    check(cfg)


def test_typos_and_wrong_types_fail_at_compose():
    with pytest.raises(ConfigCompositionException):
        compose_cfg("sampling.kk=3")
    with pytest.raises(ConfigCompositionException):
        compose_cfg("sampling.k=many")


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["selection.top_k=9"], "selection.top_k=9 exceeds sampling.k=8"),
        (["selection.strategy=best"], "selection.strategy='best' is not one of"),
        (["judge.n=3"], "set judge.temperature > 0"),
        (["sampling.top_p=1.5"], "sampling.top_p"),
    ],
)
def test_cross_field_checks_say_how_to_fix(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        check(compose_cfg(*overrides))
