"""Selection stage: keep the best candidates per prompt (by the judge, or a control that ignores it)."""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass

from selfreward.observe.metrics import mean
from selfreward.records import Candidate, Judgment, Pair, Selection, by_prompt
from selfreward.schema import choices, opt, require

Strategy = choices("Strategy", "judge", "random", "majority", "logprob", "oracle", module=__name__)
TieBreak = choices("TieBreak", "shortest", "first", module=__name__)


@dataclass
class SelectionConfig:
    strategy: Strategy = opt(Strategy.judge, "judge | random | majority (self-consistency) | logprob (sharpening) | "
                                             "oracle (verified right answers: the upper bound); only judge reads "
                                             "the scores")
    top_k: int = opt(1, "winners kept per prompt")
    threshold: float | None = opt(3.0, "minimum score to keep a candidate, in the scorer's units (None: keep the "
                                       "best)")
    min_margin: float = opt(0.0, "skip prompts whose best-minus-worst score is below this (saturated)")
    tie_break: TieBreak = opt(TieBreak.shortest, "order among equal scores: shortest first, or first sampled")
    pair_margin: float = opt(1.0, "write a chosen/rejected pair when best minus worst score is at least this")
    length_tolerance: float = opt(0.0, "prefer the shortest candidate scoring within this of the best (0 = off)")
    seed: int = opt(0, "seed of the random control")

    def __post_init__(self):
        require(self.top_k >= 1, "selection.top_k must be >= 1")
        require(self.length_tolerance >= 0, "selection.length_tolerance must be >= 0 (0 = off)")


@dataclass
class _Scored:
    c: Candidate
    score: float


def _order(cands: list[_Scored], key, tie_break: str) -> list[_Scored]:
    """Best first by key; ties broken by length (shortest) then candidate index: deterministic."""
    if tie_break == TieBreak.shortest:
        return sorted(cands, key=lambda s: (-key(s), len(s.c.text), s.c.cand_idx))
    return sorted(cands, key=lambda s: (-key(s), s.c.cand_idx))


def length_controlled(ranked: list[_Scored], tolerance: float) -> list[_Scored]:
    """Candidates scoring within `tolerance` of the best come first, shortest first; the rest keep their order."""
    best = ranked[0].score
    near = [s for s in ranked if s.score >= best - tolerance]
    return sorted(near, key=lambda s: (len(s.c.text), -s.score, s.c.cand_idx)) + ranked[len(near) :]


# One function per strategy: (the group's scored candidates, the config, a per-prompt random stream) ->
# (kept, the preference pair as (chosen, rejected) or None, why nothing was kept or None). Only `judge` reads scores,
# only `oracle` reads the verifier's verdict.
Choice = tuple[list[_Scored], tuple[_Scored, _Scored] | None, str | None]


def distinct(chosen: _Scored, candidates: list[_Scored]) -> list[_Scored]:
    """The candidates whose text differs from `chosen`'s: a pair of equal texts gives DPO no gradient."""
    return [s for s in candidates if s.c.text != chosen.c.text]


def by_judge(scored: list[_Scored], cfg: SelectionConfig, rng: random.Random) -> Choice:
    """Top-k at or above the threshold, with the margin rule; the pair is best vs worst (Self-Rewarding LMs), or the
    worst of another text, where the gap is at least `pair_margin` (saturation and the threshold do not apply)."""
    valid = [s for s in scored if not math.isnan(s.score)]
    if not valid:
        return [], None, "no_valid"
    ranked = _order(valid, lambda s: s.score, cfg.tie_break)
    margin = ranked[0].score - ranked[-1].score
    if cfg.length_tolerance > 0:  # Meta-Rewarding's length control: near-best and shorter beats best
        ranked = length_controlled(ranked, cfg.length_tolerance)
    others = distinct(ranked[0], _order(valid, lambda s: s.score, cfg.tie_break))
    worst = others[-1] if others else None
    pair = None
    if worst is not None and (gap := ranked[0].score - worst.score) > 0 and gap >= cfg.pair_margin:
        pair = ranked[0], worst
    if len(valid) > 1 and margin < cfg.min_margin:
        return [], pair, "saturated"
    keep = [s for s in ranked[: cfg.top_k] if cfg.threshold is None or s.score >= cfg.threshold]
    return keep, pair, None if keep else "abstained"


def by_random(scored: list[_Scored], cfg: SelectionConfig, rng: random.Random) -> Choice:
    """The control that ignores the judge: k at random; the pair a random chosen and a random rejected of another
    text."""
    keep = rng.sample(scored, min(cfg.top_k, len(scored)))
    chosen = rng.choice(scored)
    others = distinct(chosen, scored)
    return keep, (chosen, rng.choice(others)) if others else None, None


def by_majority(scored: list[_Scored], cfg: SelectionConfig, rng: random.Random) -> Choice:
    """Self-consistency: the most common final answer (first sampled among equals); the pair it vs a dissenting
    answer."""
    votes = Counter(s.c.final for s in scored if s.c.final is not None)
    if not votes:
        return [], None, "no_answer"
    top = max(votes.values())
    winner = next(s.c.final for s in sorted(scored, key=lambda s: s.c.cand_idx) if votes.get(s.c.final) == top)
    keep = _order([s for s in scored if s.c.final == winner], lambda s: 0.0, cfg.tie_break)[: cfg.top_k]
    other = next((s for s in distinct(keep[0], scored) if s.c.final != winner), None)
    return keep, (keep[0], other) if other else None, None


def by_logprob(scored: list[_Scored], cfg: SelectionConfig, rng: random.Random) -> Choice:
    """Sharpening: the highest mean token log-prob; the pair the most vs the least likely of another text."""
    ranked = _order(scored, lambda s: s.c.logprob, cfg.tie_break)
    others = [s for s in distinct(ranked[0], ranked) if s.c.logprob < ranked[0].c.logprob]
    return ranked[: cfg.top_k], (ranked[0], others[-1]) if others else None, None


def by_oracle(scored: list[_Scored], cfg: SelectionConfig, rng: random.Random) -> Choice:
    """The verifier's picks, what a perfect judge would keep (the upper bound); the pair a right vs a wrong
    answer."""
    right = [s for s in scored if s.c.correct]
    if not right:
        return [], None, "abstained"
    keep = _order(right, lambda s: 0.0, cfg.tie_break)[: cfg.top_k]
    wrong = next((s for s in scored if s.c.correct is False), None)
    return keep, (keep[0], wrong) if wrong else None, None


STRATEGIES = {Strategy.judge: by_judge, Strategy.random: by_random, Strategy.majority: by_majority,
              Strategy.logprob: by_logprob, Strategy.oracle: by_oracle}


def select(candidates: list[Candidate], judgments: list[Judgment], cfg: SelectionConfig,
           seed: int = 0) -> tuple[list[Selection], list[Pair], dict]:
    """(winners, preference pairs, select/ stats) by `selection.strategy` (`STRATEGIES`). A judgment's NaN score
    means it could not score: never kept. Each strategy also makes at most one preference pair per prompt for DPO,
    never of two equal texts."""
    scores = {j.key: j.score for j in judgments}
    groups = by_prompt(candidates)
    pick = STRATEGIES[Strategy(cfg.strategy)]
    selected, pairs, verdicts, counts = [], [], [], Counter()
    for pid, cands in groups.items():
        scored = [_Scored(c, scores.get(c.key, math.nan)) for c in cands]
        keep, pair, why = pick(scored, cfg, random.Random(f"{cfg.seed}/{seed}/{pid}"))  # str seeds hash stably
        if why:
            counts[why] += 1
        if pair is not None:
            chosen, rejected = pair
            pairs.append(Pair(cands[0].prompt, chosen.c.text, rejected.c.text, pid, chosen.score, rejected.score))
            verdicts.append((chosen.c.correct, rejected.c.correct))
        selected += [Selection(s.c.prompt, s.c.text, pid, s.c.cand_idx, s.score, s.c.correct) for s in keep]
    n = max(1, len(groups))
    verified = [s.correct for s in selected if s.correct is not None]
    checked = [(a, b) for a, b in verdicts if a is not None and b is not None]

    def share(test) -> float:
        return sum(map(test, checked)) / len(checked) if checked else math.nan

    stats = {
        "select/kept": len(selected),
        "select/prompts_kept": len({s.prompt_id for s in selected}) / n,
        "select/abstained": counts["abstained"] / n,
        "select/skipped_saturated": counts["saturated"] / n,
        "select/mean_score": mean(s.score for s in selected),
        "select/verified_precision": sum(verified) / len(verified) if verified else math.nan,
        "select/pairs": len(pairs),
        # where the verifier can tell: pairs that teach the right thing, and the two kinds that teach nothing sure
        "select/pair_precision": share(lambda v: v[0] and not v[1]),
        "select/pairs_both_right": share(lambda v: v[0] and v[1]),
        "select/pairs_both_wrong": share(lambda v: not v[0] and not v[1]),
    }
    return selected, pairs, stats
