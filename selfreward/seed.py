"""Deprecated: `python -m selfreward.seed` is now `selfreward m0` (python -m selfreward.m0); this alias goes in the
next release."""

import sys

if __name__ == "__main__":
    from selfreward.m0.__main__ import main

    print("[selfreward] python -m selfreward.seed is now selfreward m0 (python -m selfreward.m0): the old command "
          "works for one more release", file=sys.stderr, flush=True)
    main(sys.argv[1:])
