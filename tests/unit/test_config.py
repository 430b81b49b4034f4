import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.errors import ConfigCompositionException

from selfreward.config import ConfigError, check, register

CONF = Path(__file__).resolve().parents[2] / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
JUDGES = sorted(p.stem for p in (CONF / "judge").glob("*.yaml"))
NEEDS = {"reward_model": ["judge.reward_model=/models/rm"]}  # required values a run must give on the command line
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
    cfg = compose_cfg(f"+experiment={name}", *NEEDS.get(name, []))
    check(cfg)


@pytest.mark.parametrize("name", JUDGES)
def test_every_judge_composes(name):
    cfg = compose_cfg(f"judge={name}", *NEEDS.get(name, []))
    check(cfg)
    assert cfg.judge.kind == {"rubric5": "self"}.get(name, name)


def test_reward_model_experiment_drops_the_threshold():
    cfg = compose_cfg("+experiment=reward_model", "judge.reward_model=/models/rm")
    assert cfg.judge.kind == "reward_model" and cfg.selection.threshold is None


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
        (["judge.kind=llm"], "judge.kind='llm' is not one of ['self', 'verifier', 'reward_model', 'combined', 'pairwise']"),
        (["judge.verifier=unit"], "judge.verifier='unit' is not one of"),
        (["judge=combined", "judge.combine=max"], "judge.combine='max' is not one of"),
        (["judge=reward_model"], "set judge.reward_model=PATH"),
        (["judge=combined", "judge.combine=weighted", "judge.weights.reward_model=1"], "set judge.reward_model=PATH"),
        (["judge=combined", "+judge.weights.critic=1"], "unknown scorers ['critic']"),
        (["judge.answer_regex=Answer:.*"], "needs a capture group"),
        (["selection.length_tolerance=-1"], "length_tolerance must be >= 0"),
    ],
)
def test_cross_field_checks_say_how_to_fix(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        check(compose_cfg(*overrides))


def test_llama3_8b_dry_run_plans_without_weights_or_network():
    import os
    import subprocess
    import sys

    env = dict(os.environ, HF_HUB_OFFLINE="1")
    r = subprocess.run([sys.executable, "-m", "selfreward", "+experiment=llama3_8b", "dry_run=true"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "backend    vllm" in r.stdout and "8.03B parameters" in r.stdout
    assert re.search(r"weights\s+15\.0", r.stdout) and "KV cache" in r.stdout and "LoRA training" in r.stdout


@pytest.mark.parametrize("overrides, message", [
    (["backend=vllm", "train.merge=true", "iterations=3"], "train.merge=false"),
    (["train.processes=2", "iterations=3"], "train.merge=false"),
    (["backend=vllm", "model.init=random"], "model.init=random needs backend=hf"),
])
def test_engine_and_process_checks(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        check(compose_cfg(*overrides))


@pytest.mark.parametrize("launcher, target", [("slurm", "SlurmLauncher"), ("local", "JoblibLauncher")])
def test_sweep_launcher_configs_compose(launcher, target):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "selfreward", f"hydra/launcher={launcher}", "--cfg", "hydra"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert target in r.stdout
