import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """One seed cache for the whole session, so the tiny seed is built once."""
    d = tmp_path_factory.mktemp("cache")
    os.environ["SELFREWARD_CACHE"] = str(d)
    return d


def run_cli(args: list[str], run_dir: Path, cache: Path, timeout: int = 600,
            env: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, SELFREWARD_CACHE=str(cache), WANDB_MODE="offline", WANDB_SILENT="true", **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "selfreward", *args, f"hydra.run.dir={run_dir}"],
        cwd=run_dir.parent, env=env, capture_output=True, text=True, timeout=timeout,
    )


@pytest.fixture(scope="session")
def tiny_model(cache_dir):
    """The tiny-experiment seed (built once) loaded as (model, tokenizer)."""
    from hydra import compose, initialize_config_module

    from selfreward.backends.hf import load
    from selfreward.config import register
    from selfreward.m0.builtin import ensure

    register()
    with initialize_config_module("selfreward.conf", version_base=None):
        cfg = compose("config", overrides=["+experiment=tiny"])
    path = ensure(cfg.model.builtin, progress=False)
    return load(str(path), dtype="float32")  # exact-arithmetic tests; bf16 has its own (test_precision)


def cand(pid: str, i: int, text: str, **kw):
    """A Candidate record with neutral defaults for the fields a test does not care about."""
    from selfreward.records import Candidate

    base = dict(prompt="Q", seed=0, answer=None, final=None, logprob=0.0, entropy=0.0, correct=None)
    return Candidate(prompt_id=pid, cand_idx=i, text=text, **{**base, **kw})


def judged(scores: dict, parse_fail: dict | None = None):
    """Judgment records from {(prompt_id, cand_idx): score}."""
    from selfreward.records import Judgment

    return [Judgment(pid, i, None, None, s, (parse_fail or {}).get((pid, i), 0)) for (pid, i), s in scores.items()]


def compose_config(overrides: list[str]):
    """The composed config for `overrides`, as `python -m selfreward OVERRIDES` would see it."""
    from hydra import compose, initialize_config_module

    from selfreward.config import register

    register()
    with initialize_config_module("selfreward.conf", version_base=None):
        return compose("config", overrides=overrides)


def run_loop(overrides: list[str], run_dir: Path) -> list[dict]:
    """The loop in this process (checked as the CLI checks it): the per-iteration metric rows."""
    from selfreward.config import check
    from selfreward.loop import run

    cfg = compose_config(overrides)
    check(cfg)
    return run(cfg, run_dir)


def pytest_collection_modifyitems(config, items):
    """`gpu`-marked tests need CUDA: skipped, with the reason, where torch sees none."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
