"""Deprecated: `python -m selfreward.tasks.seed --out ROOT [FIELD=value ...]` is now
`selfreward m0 --builtin --out ROOT [model.builtin.FIELD=value ...]`; this alias goes in the next release."""

import sys

if __name__ == "__main__":
    from selfreward.m0.__main__ import legacy_recipe_args, main

    print("[selfreward] python -m selfreward.tasks.seed is now selfreward m0 --builtin (recipe fields as "
          "model.builtin.FIELD=value): the old command works for one more release", file=sys.stderr, flush=True)
    main(["--builtin", *legacy_recipe_args(sys.argv[1:])])
