import re
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from selfreward import scorers
from selfreward.config import ConfigError, check, describe, register

CONF = Path(__file__).resolve().parents[2] / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
JUDGES = sorted(p.stem for p in (CONF / "judge").glob("*.yaml"))
NEEDS = {"reward_model": ["judge.reward_model.path=/models/rm"]}  # required values a run must give on the command line
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
    assert scorers.name_of(cfg.judge) == {"rubric5": "rubric", "self": "rubric"}.get(name, name)


def test_reward_model_experiment_drops_the_threshold():
    cfg = compose_cfg("+experiment=reward_model", "judge.reward_model.path=/models/rm")
    assert scorers.name_of(cfg.judge) == "reward_model" and cfg.selection.threshold is None


def test_typos_and_wrong_types_fail_at_compose():
    with pytest.raises(ConfigCompositionException):
        compose_cfg("sampling.kk=3")
    with pytest.raises(ConfigCompositionException):
        compose_cfg("sampling.k=many")
    for choice in ("selection.strategy=best", "judge.rubric.scoring=mean", "judge=verifier judge.verifier.mode=unit",
                   "judge=combined judge.combined.mode=max", "train.start_from=scratch", "tracking.mode=cloud"):
        with pytest.raises(ConfigCompositionException, match="Error merging override"):
            compose_cfg(*choice.split())


def test_the_scorer_comes_only_from_the_chosen_group():
    """judge=pairwise is the only way to the pairwise scorer: no setting picks a scorer, and another scorer's
    settings (or a misspelt one) fail at compose with Hydra's message."""
    assert scorers.name_of(compose_cfg("judge=pairwise").judge) == "pairwise"
    for override in ("judge.kind=pairwise", "judge.pairwise.opponents=2", "judge.rubric.templat=x.jinja",
                     "judge=pairwise judge.rubric.n=2"):
        with pytest.raises(ConfigCompositionException):
            compose_cfg(*override.split())


def test_help_shows_every_field_with_type_default_and_help():
    text = describe()
    assert "  sampling.temperature: float = 1.0\n      sampling temperature" in text
    assert "selection.strategy: judge | random | majority | logprob | oracle = 'judge'" in text
    assert "judge.pairwise.opponents: int = 3" in text and "train.replay_fraction: float = 0.3" in text
    import dataclasses

    from selfreward.config import Config
    for f in dataclasses.fields(Config.__dataclass_fields__["sampling"].default_factory()):
        assert f"sampling.{f.name}:" in text and f.metadata["help"] in text


def test_one_command_with_subcommands_each_with_help():
    """`selfreward --help` lists the subcommands; each answers --help with its own usage; `run` names the run."""
    from selfreward.__main__ import SUBCOMMANDS

    r = subprocess.run([sys.executable, "-m", "selfreward", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and all(f"  {name} " in r.stdout for name in SUBCOMMANDS)
    assert "sampling.temperature: float" in r.stdout
    for name in SUBCOMMANDS:
        r = subprocess.run([sys.executable, "-m", "selfreward", name, "--help"], capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0 and f"selfreward {name}" in r.stdout, (name, r.stderr[-500:])
    r = subprocess.run([sys.executable, "-m", "selfreward", "run", "dry_run=true", "+experiment=llama3_8b"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "GPUs" in r.stdout, r.stderr[-1000:]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["selection.top_k=9"], "selection.top_k=9 exceeds sampling.k=8"),
        (["judge.rubric.n=3"], "set judge.rubric.temperature > 0"),
        (["sampling.top_p=1.5"], "sampling.top_p"),
        (["judge=reward_model"], "set judge.reward_model.path=PATH"),
        (["judge=combined", "judge.combined.mode=weighted", "judge.combined.weights.reward_model=1"],
         "needs judge.reward_model.path=PATH"),
        (["judge=combined", "+judge.combined.weights.critic=1"], "unknown scorers ['critic']"),
        (["judge=verifier", "judge.verifier.answer_regex=Answer:.*"], "needs a capture group"),
        (["selection.length_tolerance=-1"], "length_tolerance must be >= 0"),
        (["train.replay_fraction=1.0"], "train.replay_fraction must be in [0, 1)"),
        (["train.epochs=0", "train.steps=0"], "set train.epochs > 0 or train.steps > 0"),
        (["model=local"], "model.path must be set"),
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
    # the judge measured on 512 held-out preference pairs: counted in the work and the memory
    assert "ultrafeedback_binarized:test_prefs" in r.stdout and "1024 (preference responses)" in r.stdout
    assert "preference judging: 1024 judge prompts of up to 4096 tokens" in r.stdout


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


def test_renamed_groups_and_keys_compose_the_same_config_and_the_old_names_say_the_new_ones():
    from tests.conftest import compose_config

    old = compose_config(["judge=self", "data=jsonl", "data.train_prompts=a.jsonl", "data.eval_prompts=b.jsonl"])
    new = compose_config(["judge=rubric", "data=prompts", "data.train_prompts=a.jsonl", "data.eval_prompts=b.jsonl"])
    assert OmegaConf.to_container(old) == OmegaConf.to_container(new)
    assert OmegaConf.to_container(compose_config([])) == OmegaConf.to_container(compose_config(["judge=rubric"]))
    from selfreward.config import upgrade

    renamed = upgrade(["model.seed.steps=800", "train.start_from=seed", "seed=3"])
    assert renamed == ["model.builtin.steps=800", "train.start_from=m0", "seed=3"]  # the random seed keeps its name
    assert compose_config(renamed).model.builtin.steps == 800
    r = subprocess.run([sys.executable, "-m", "selfreward", "judge=self", "model.seed.steps=900",
                        "train.start_from=seed", "dry_run=true"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "judge=self is now judge=rubric" in r.stderr, r.stderr[-1000:]
    assert "model.seed is now model.builtin" in r.stderr and "train.start_from=seed is now train.start_from=m0" in \
        r.stderr
    r = subprocess.run([sys.executable, "-m", "selfreward", "judge=rubric", "dry_run=true"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and "is now" not in r.stderr
