"""The `selfreward` command: the run (Hydra: compose the config, check it, run the loop) and its subcommands.

    selfreward [run] [overrides]               # the CPU default: built-in task and seed (python -m selfreward too)
    selfreward +experiment=llama3_8b           # a real model (GPU, vLLM)
    selfreward --help                          # the subcommands, and every field: type, default, help
    selfreward verify FILE                     # audit the verifier on a JSONL of candidates
    selfreward m0 --out DIR [overrides]        # M0 for any model with a verifier (model.bootstrap)
    selfreward m0 --builtin                    # rebuild the built-in task's tiny model (model.builtin)
    selfreward compare RUNS... --out DIR       # tables and plots across runs
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from selfreward import verify
from selfreward.config import check, describe, register, upgrade
from selfreward.data import DataError
from selfreward.loop import run
from selfreward.plan import plan
from selfreward.rundir.runinfo import ResumeRefused
from selfreward.schema import ConfigError
from selfreward.train.fit import TrainingAborted

register()
# (group, old name) -> the name it has now; the old YAML composes the new one
RENAMED = {("judge", "self"): "rubric", ("data", "jsonl"): "prompts"}


@hydra.main(config_path="pkg://selfreward.conf", config_name="config", version_base=None)
def app(cfg: DictConfig) -> None:
    try:
        check(cfg)
    except ConfigError as e:
        sys.exit(f"config error: {e}")
    hc = HydraConfig.get()
    for (group, old), new in RENAMED.items():
        if hc.runtime.choices.get(group) == old:
            print(f"[selfreward] {group}={old} is now {group}={new}: the old name works for one more release",
                  file=sys.stderr, flush=True)
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


def _m0(argv: list[str]) -> int:
    from selfreward.m0.__main__ import main as m0

    m0(argv)
    return 0


def _builtin_model(argv: list[str]) -> int:
    print("[selfreward] selfreward builtin-model is now selfreward m0 --builtin: the old command works for one more "
          "release", file=sys.stderr, flush=True)
    from selfreward.m0.__main__ import legacy_recipe_args

    return _m0(["--builtin", *legacy_recipe_args(argv)])


def _compare(argv: list[str]) -> int:
    from selfreward import compare

    return compare.main(argv)


# name: (what it does, its entry point taking the arguments after the name); the run itself needs no name
SUBCOMMANDS = {
    "verify": ("audit the verifier on a JSONL of candidates (selfreward verify FILE)", verify.main),
    "m0": ("build M0: for any model with a verifier (selfreward m0 --out DIR [overrides]) or the built-in task's "
           "tiny model (selfreward m0 --builtin)", _m0),
    "compare": ("tables and plots across runs (selfreward compare RUNS... --out DIR)", _compare),
}


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["builtin-model"]:  # deprecated: not listed among the subcommands
        sys.exit(_builtin_model(args[1:]))
    if args[:1] == ["run"]:
        sys.argv.pop(1)
    elif args[:1] and args[0] in SUBCOMMANDS:
        sys.exit(SUBCOMMANDS[args[0]][1](args[1:]))
    elif any(a in ("--help", "-h") for a in args):
        print("usage: selfreward [run] [key=value ...] | selfreward SUBCOMMAND --help\n\nsubcommands:")
        print("\n".join(f"  {name:14s} {what}" for name, (what, _) in SUBCOMMANDS.items()))
        print("\nThe run's config (key=value overrides):\n")
        print(describe())  # Hydra's own --help does not show the schema's field help
        print("\nHydra's options: --hydra-help; the composed config: --cfg job")
        return
    sys.argv[1:] = upgrade(sys.argv[1:])
    app()


if __name__ == "__main__":
    main()
