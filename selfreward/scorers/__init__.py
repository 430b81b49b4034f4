"""Scorers: what gives each candidate its score. One module per scorer, each with

    Config                                   its schema: `conf/judge/NAME.yaml` extends it (`defaults: [NAME_schema]`)
    uses_policy                              whether the policy itself judges (it then shares the context)
    score(backend, candidates, cfg, seed)    -> one `records.Judgment` per candidate (NaN = could not score)
    judge_prompt(cfg, prompt)                -> (the policy's judge prompt, responses, output budget) or None

The scorer of a run is the one whose `Config` the chosen `judge=` group extends, so no setting can pick another.
A new scorer: one module, one YAML in conf/judge/, one line below.
"""

from __future__ import annotations

from types import ModuleType

from omegaconf import OmegaConf

from selfreward.records import Candidate, Judgment, PromptFormat
from selfreward.scorers import combined, pairwise, reward_model, rubric, verifier

SCORERS: dict[str, ModuleType] = {
    "rubric": rubric,
    "pairwise": pairwise,
    "verifier": verifier,
    "reward_model": reward_model,
    "combined": combined,
}


def name_of(cfg) -> str:
    """The scorer a judge config belongs to (by its schema type)."""
    kind = OmegaConf.get_type(cfg) if OmegaConf.is_config(cfg) else type(cfg)
    for name, module in SCORERS.items():
        if module.Config is kind:
            return name
    raise ValueError(f"judge config of type {kind} is none of the scorers' ({list(SCORERS)})")


def of(cfg) -> ModuleType:
    return SCORERS[name_of(cfg)]


def score(backend, candidates: list[Candidate], cfg, seed: int, *, fmt: PromptFormat | None = None,
          desc: str = "judge") -> list[Judgment]:
    """Score `candidates` with the scorer `cfg` (the `judge` config) belongs to."""
    return of(cfg).score(backend, candidates, cfg, seed, fmt=fmt, desc=desc)


def sampled(cfg) -> bool:
    """Whether the judge samples (a temperature above 0 in its rubric or pairwise settings): two runs of it may
    disagree, so its test-retest agreement is worth measuring."""
    parts = [getattr(cfg, name, None) for name in ("rubric", "pairwise")]
    return any(part is not None and part.temperature > 0 for part in parts)
