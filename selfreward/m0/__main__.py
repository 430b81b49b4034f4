"""`selfreward m0` (python -m selfreward.m0): build M0, either way.

    selfreward m0 --out DIR [key=value ...]     any model with a verifier: judge data from its own verified samples on
                                                the task's seed split (model.bootstrap.*); then run with model.path=DIR
    selfreward m0 --builtin [--out ROOT] [model.builtin.FIELD=value ...]
                                                the built-in task's tiny model from its recipe, saved at
                                                ROOT/<recipe hash> (default: the shipped selfreward/m0/builtin_weights)

Overrides are the run's (Hydra), so a recipe, a model and a task are named the same way everywhere.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from hydra import compose, initialize_config_module

from selfreward import data
from selfreward.backends.hf import context_length
from selfreward.backends.load import load_policy
from selfreward.config import check, register, upgrade
from selfreward.m0 import bootstrap, builtin, resolve


def compose_config(overrides: list[str]):
    register()
    with initialize_config_module("selfreward.conf", version_base=None):
        return compose("config", overrides=upgrade(overrides))


def build_builtin(out_root: Path, overrides: list[str]) -> Path:
    """The built-in model for the composed `model.builtin` recipe, trained now and saved at OUT_ROOT/<hash>."""
    recipe = compose_config(overrides).model.builtin
    out = out_root / builtin.recipe_hash(recipe)
    print(json.dumps(builtin.build(recipe, out), indent=2))
    print(f"saved {out}")
    return out


def build_bootstrap(out: Path, overrides: list[str]) -> None:
    """M0 from `model.path` on the task's seed split, saved at `out`."""
    cfg = compose_config(overrides)
    check(cfg)
    bootstrap.check(cfg)
    policy, tokenizer = load_policy(cfg, resolve(cfg))
    fits = data.context_check(cfg, tokenizer, context_length(policy))
    with tempfile.TemporaryDirectory() as scratch:  # data.load's reports (rejected rows) are not M0's
        train, _, _ = data.load(cfg.data, Path(scratch), fits)
    _, seed_split = bootstrap.split(train, cfg, data.seed_pool(cfg.data, cfg.model.bootstrap.prompts))
    bootstrap.build(policy, tokenizer, seed_split, cfg, out)


def legacy_recipe_args(args: list[str]) -> list[str]:
    """The old builtin-model command's recipe fields (`steps=200`) as overrides (`model.builtin.steps=200`)."""
    return [a if a.startswith("-") or "=" not in a or "." in a.split("=")[0] else f"model.builtin.{a}" for a in args]


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("--help", "-h") for a in args):
        print(__doc__.strip().replace("`selfreward m0` (python -m selfreward.m0)", "usage: selfreward m0", 1))
        return
    is_builtin = "--builtin" in args
    args = [a for a in args if a != "--builtin"]
    out = None
    if "--out" in args:
        i = args.index("--out")
        if i + 1 >= len(args):
            raise SystemExit("selfreward m0: --out needs a directory (selfreward m0 --help)")
        out, args = Path(args[i + 1]), args[:i] + args[i + 2 :]
    if is_builtin:
        build_builtin(out or builtin.PACKAGED, args)
    elif out is None:
        raise SystemExit("selfreward m0: give --out DIR (M0 for model.path) or --builtin (the built-in model); "
                         "selfreward m0 --help")
    else:
        build_bootstrap(out, args)


if __name__ == "__main__":
    main()
