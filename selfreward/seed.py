"""python -m selfreward.seed --out DIR [overrides]: M0 for any model with a verifier (see `selfreward.bootstrap`),
for the composed config's model, task and rubric; the loop then takes `model.path=DIR`."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from hydra import compose, initialize_config_module

from selfreward import bootstrap, data
from selfreward.backends.hf import context_length
from selfreward.backends.load import load_policy, resolve_model
from selfreward.config import check, register


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    usage = ("usage: selfreward m0 --out DIR [key=value ...]  (Hydra overrides, as the run; python -m selfreward.seed "
             "too)\n\nBuilds M0 from model.path on the task's seed split (model.bootstrap.*: see selfreward --help) "
             "and saves it at DIR, for model.path=DIR.")
    if any(a in ("--help", "-h") for a in args):
        print(usage)
        return
    if "--out" not in args or args.index("--out") + 1 >= len(args):
        raise SystemExit(usage)
    i = args.index("--out")
    out, overrides = Path(args[i + 1]), args[:i] + args[i + 2 :]
    register()
    with initialize_config_module("selfreward.conf", version_base=None):
        cfg = compose("config", overrides=overrides)
    check(cfg)
    bootstrap.check(cfg)
    policy, tokenizer = load_policy(cfg, resolve_model(cfg))
    fits = data.context_check(cfg, tokenizer, context_length(policy))
    with tempfile.TemporaryDirectory() as scratch:  # data.load's reports (rejected rows) are not M0's
        train, _, _ = data.load(cfg.data, Path(scratch), fits)
    _, seed_split = bootstrap.split(train, cfg, data.seed_pool(cfg.data, cfg.model.bootstrap.prompts))
    bootstrap.build(policy, tokenizer, seed_split, cfg, out)


if __name__ == "__main__":
    main()
