"""Hydra entry point: compose the config, validate it, run the loop.

    python -m selfreward                       # the CPU default: built-in task and seed
    python -m selfreward +experiment=llama3_8b # a real model (GPU, vLLM)
    python -m selfreward --help                # config groups and options
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from selfreward.config import ConfigError, check, register

register()


@hydra.main(config_path="pkg://selfreward.conf", config_name="config", version_base=None)
def app(cfg: DictConfig) -> None:
    from selfreward.data import DataError
    from selfreward.runinfo import ResumeRefused
    from selfreward.train import TrainingAborted

    try:
        check(cfg)
    except ConfigError as e:
        sys.exit(f"config error: {e}")
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    if hc.mode.name == "MULTIRUN" and cfg.tracking.group is None:
        cfg.tracking.group = "_".join(Path(hc.sweep.dir).parts[-2:])  # one W&B group per sweep, named by its folder
    if cfg.dry_run:
        from selfreward.plan import plan

        print(plan(cfg))
        return
    print(f"[selfreward] run directory: {run_dir}", flush=True)
    from selfreward.loop import run

    try:
        run(cfg, run_dir, OmegaConf.to_container(cfg, resolve=True))
    except (DataError, ConfigError, ResumeRefused, TrainingAborted, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    print(f"[selfreward] done: {run_dir / 'summary.json'}", flush=True)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
