"""Every random stream of a run derives from the global seed and where it is drawn, so a resumed run (or one stage
re-run alone) draws exactly what an uninterrupted run drew.

    derive(seed, i)              training in iteration i (adapter init, batch draws) and the random control
    derive(seed, 0), (seed, 1)   evaluation: greedy and sampled generation; (seed, 2) judging the samples
    derive(seed, 0, i, k)        sampling and judging shard k of iteration i
    repeat(s, r)                 the r-th judge sample (judge.rubric.n > 1) of a stage seeded s

Backends seed batch b of a call made under seed s with s + b (vLLM: prompt b).
"""

from __future__ import annotations

_WEIGHTS = (1, 10_007, 101, 7_919)  # one per path position; kept as the run directories of earlier versions drew


def derive(base: int, *path: int) -> int:
    """The seed for `path` under `base`: base * 1_000_003 + sum(path[j] * weight[j]), kept below 2**31."""
    if len(path) > len(_WEIGHTS):
        raise ValueError(f"seeds.derive takes at most {len(_WEIGHTS)} path parts, got {path}")
    return (base * 1_000_003 + sum(p * w for p, w in zip(path, _WEIGHTS))) % (2**31)


def repeat(seed: int, r: int) -> int:
    """The seed of the r-th repeat (judge sample) within a stage seeded `seed`; repeat 0 is `seed` itself."""
    return (seed + r * _WEIGHTS[3]) % (2**31)
