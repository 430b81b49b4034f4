"""Verifier and self-judge together (`judge=combined`).

gate: the verifier decides pass/fail; a passing candidate gets its rubric self-judge score (in judge.scores), a
failing one min(judge.scores) - 1, so any pass outranks every fail and selection.threshold keeps its meaning; the
self-judge runs only on the passing candidates. weighted: the sum over `judge.combined.weights` of weight x that
scorer's score, each in its own units (a weight of 0 skips the scorer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from selfreward.records import Candidate, Judgment, PromptFormat
from selfreward.schema import JudgeConfig, choices, opt, require
from selfreward.scorers import reward_model, rubric, verifier

uses_policy = True
PARTS = ("verifier", "self", "reward_model")


Mode = choices("Mode", "gate", "weighted", module=__name__)


@dataclass
class CombinedSettings:
    mode: Mode = opt(Mode.gate, "gate: the verifier gates, the self-judge ranks the passing; weighted: a weighted sum")
    weights: dict[str, float] = opt({"verifier": 1.0, "self": 1.0, "reward_model": 0.0},
                                    "mode=weighted: weight per scorer (verifier, self, reward_model; 0 = skip it)")

    def __post_init__(self):
        unknown = sorted(set(self.weights) - set(PARTS))
        require(not unknown, f"judge.combined.weights has unknown scorers {unknown}; use {list(PARTS)}")
        require(self.mode == Mode.gate or any(self.weights.values()),
                "judge.combined.mode=weighted needs judge.combined.weights, e.g. {verifier: 1.0, self: 1.0}")


@dataclass
class Config(JudgeConfig):
    combined: CombinedSettings = opt(CombinedSettings(), "how the parts combine")
    verifier: verifier.VerifierSettings = opt(verifier.VerifierSettings(), "the verifier part")
    rubric: rubric.RubricSettings = opt(rubric.RubricSettings(), "the self-judge part")
    reward_model: reward_model.RewardModelSettings = opt(reward_model.RewardModelSettings(),
                                                         "the reward-model part (weighted, weight > 0)")

    def __post_init__(self):
        super().__post_init__()
        uses_rm = self.combined.mode == Mode.weighted and self.combined.weights.get("reward_model")
        require(not uses_rm or bool(self.reward_model.path),
                "judge.combined.weights.reward_model > 0 needs judge.reward_model.path=PATH")


def score(backend, candidates: list[Candidate], cfg, seed: int, *, fmt: PromptFormat | None = None,
          desc: str = "judge") -> list[Judgment]:
    def self_judge(cands: list[Candidate]) -> list[Judgment]:
        return rubric.judge_with(backend, cands, cfg.rubric, cfg.scores, cfg.batch_size, seed, fmt, desc)

    if cfg.combined.mode == Mode.gate:
        checks = verifier.verdicts(candidates, cfg.verifier, desc=f"{desc} verify")
        passing = [i for i, (ok, _) in enumerate(checks) if ok]
        judged = dict(zip(passing, self_judge([candidates[i] for i in passing])))
        out = []
        for i, (c, (ok, raw)) in enumerate(zip(candidates, checks)):
            s = judged.get(i)
            value = math.nan if ok is None else s.score if s else float(min(cfg.scores) - 1)
            out.append(Judgment.of(c, value, raw={"verifier": raw, "self": s and s.raw},
                                   judge_prompt=s and s.judge_prompt,
                                   parse_fail=int(ok is None) + (s.parse_fail if s else 0),
                                   unconstrained=s and s.unconstrained))
        return out
    weights = {k: float(w) for k, w in cfg.combined.weights.items() if w}
    parts: dict[str, list[Judgment]] = {}
    if "verifier" in weights:
        parts["verifier"] = verifier.score(backend, candidates, cfg, seed, desc=f"{desc} verify")
    if "self" in weights:
        parts["self"] = self_judge(candidates)
    if "reward_model" in weights:
        parts["reward_model"] = reward_model.score(backend, candidates, cfg, seed, desc=f"{desc} reward model")
    return [Judgment.of(c, sum(w * parts[k][i].score for k, w in weights.items()),  # NaN in any part stays NaN
                        raw={k: js[i].score for k, js in parts.items()},
                        judge_prompt=parts["self"][i].judge_prompt if "self" in parts else None,
                        parse_fail=sum(js[i].parse_fail for js in parts.values()),
                        unconstrained=parts["self"][i].unconstrained if "self" in parts else None)
            for i, c in enumerate(candidates)]


def judge_prompt(cfg, prompt: str) -> tuple[str, int, int] | None:
    """The self-judge's prompt where it runs (gate, or weighted with a self weight)."""
    uses_self = cfg.combined.mode == Mode.gate or cfg.combined.weights.get("self")
    return rubric.judge_prompt(cfg, prompt) if uses_self else None
