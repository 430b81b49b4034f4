"""Hydra entry point: compose the config, check it, run the loop.

    python -m selfreward                       # the CPU default: built-in task and seed
    python -m selfreward +experiment=llama3_8b # a real model (GPU, vLLM)
    python -m selfreward --help                # every field: type, default, help
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from selfreward import verify
from selfreward.config import check, describe, register
from selfreward.data import DataError
from selfreward.loop import run
from selfreward.plan import plan
from selfreward.rundir.runinfo import ResumeRefused
from selfreward.schema import ConfigError
from selfreward.train.fit import TrainingAborted

register()


@hydra.main(config_path="pkg://selfreward.conf", config_name="config", version_base=None)
def app(cfg: DictConfig) -> None:
    try:
        check(cfg)
    except ConfigError as e:
        sys.exit(f"config error: {e}")
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    if hc.mode.name == "MULTIRUN" and cfg.tracking.group is None:
        cfg.tracking.group = "_".join(Path(hc.sweep.dir).parts[-2:])  # one W&B group per sweep, named by its folder
    if cfg.dry_run:
        print(plan(cfg))
        return
    print(f"[selfreward] run directory: {run_dir}", flush=True)
    try:
        run(cfg, run_dir)
    except (DataError, ConfigError, ResumeRefused, TrainingAborted, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    print(f"[selfreward] done: {run_dir / 'summary.json'}", flush=True)


def main() -> None:
    if sys.argv[1:2] == ["verify"]:  # `selfreward verify FILE`: audit the verifier (selfreward/verify.py)
        sys.exit(verify.main(sys.argv[2:]))
    if any(a in ("--help", "-h") for a in sys.argv[1:]):
        print(describe())  # Hydra's own --help does not show the schema's field help
        print("\nHydra's options: --hydra-help; the composed config: --cfg job")
        return
    app()


if __name__ == "__main__":
    main()
