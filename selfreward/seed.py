"""python -m selfreward.seed --out DIR [overrides]: M0 for any model with a verifier (see `selfreward.bootstrap`)."""

from selfreward.bootstrap import main

if __name__ == "__main__":
    main()
