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


def run_cli(args: list[str], run_dir: Path, cache: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, SELFREWARD_CACHE=str(cache), WANDB_MODE="offline", WANDB_SILENT="true")
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
    from selfreward.tasks.seed import ensure_seed

    register()
    with initialize_config_module("selfreward.conf", version_base=None):
        cfg = compose("config", overrides=["+experiment=tiny"])
    path = ensure_seed(cfg.model.seed, progress=False)
    return load(str(path))
