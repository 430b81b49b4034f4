"""Compare runs: `selfreward compare` (selfreward/compare.py), kept here as a script for sweeps' users.

    python analysis/compare.py multirun/2026-11-26/12-00-00 --out compare/
"""

import sys

from selfreward.compare import main

if __name__ == "__main__":
    sys.exit(main())
