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


def select(candidates: list[Candidate], judgments: list[Judgment], cfg: SelectionConfig,
           seed: int = 0) -> tuple[list[Selection], list[Pair], dict]:
    """(winners, preference pairs, select/ stats). A judgment's NaN score means it could not score: never kept.

    Strategies: judge (top-k at or above a threshold, with a margin rule), random, majority (most common final
    answer), logprob (highest mean token log-prob), oracle (the verifier's right answers: the upper bound a judge
    could reach; the only strategy that reads `correct`). Only `judge` reads scores. Each also makes one preference
    pair per prompt for DPO: judge best vs worst; the controls a random pair, the majority answer vs a dissenting one,
    the most vs the least likely candidate, and a right vs a wrong answer.
    """
    scores = {j.key: j.score for j in judgments}
    groups = by_prompt(candidates)
    selected, pairs, counts = [], [], Counter()
    for pid, cands in groups.items():
        scored = [_Scored(c, scores.get(c.key, math.nan)) for c in cands]
        if cfg.strategy == Strategy.judge:
            valid = [s for s in scored if not math.isnan(s.score)]
            if not valid:
                counts["no_valid"] += 1
                continue
            ranked = _order(valid, lambda s: s.score, cfg.tie_break)
            worst = ranked[-1]
            margin = ranked[0].score - worst.score
            if cfg.length_tolerance > 0:  # Meta-Rewarding's length control: near-best and shorter beats best
                ranked = length_controlled(ranked, cfg.length_tolerance)
            # the preference pair, as Self-Rewarding LMs makes it: best vs worst unless tied or closer than pair_margin
            # (the SFT rules below, saturation and the threshold, do not apply to it)
            if ranked[0] is not worst and (gap := ranked[0].score - worst.score) > 0 and gap >= cfg.pair_margin:
                pairs.append(Pair(cands[0].prompt, ranked[0].c.text, worst.c.text, pid, ranked[0].score, worst.score))
            if len(valid) > 1 and margin < cfg.min_margin:
                counts["saturated"] += 1
                continue
            keep = [s for s in ranked[: cfg.top_k] if cfg.threshold is None or s.score >= cfg.threshold]
            if not keep:
                counts["abstained"] += 1
                continue
        elif cfg.strategy == Strategy.random:
            rng = random.Random(f"{cfg.seed}/{seed}/{pid}")  # str seeds hash deterministically
            keep = rng.sample(scored, min(cfg.top_k, len(scored)))
            if len(scored) > 1:  # the DPO control: a random chosen and a random rejected
                chosen, rejected = rng.sample(scored, 2)
                pairs.append(Pair(cands[0].prompt, chosen.c.text, rejected.c.text, pid, chosen.score, rejected.score))
        elif cfg.strategy == Strategy.majority:
            votes = Counter(s.c.final for s in scored if s.c.final is not None)
            if not votes:
                counts["no_answer"] += 1
                continue
            top = max(votes.values())
            winner = next(s.c.final for s in sorted(scored, key=lambda s: s.c.cand_idx) if votes.get(s.c.final) == top)
            keep = _order([s for s in scored if s.c.final == winner], lambda s: 0.0, cfg.tie_break)[: cfg.top_k]
            if other := next((s for s in scored if s.c.final != winner), None):  # a winner vs a dissenting answer
                pairs.append(Pair(cands[0].prompt, keep[0].c.text, other.c.text, pid, keep[0].score, other.score))
        elif cfg.strategy == Strategy.oracle:  # the verifier's picks: what a perfect judge would keep
            right = [s for s in scored if s.c.correct]
            if not right:
                counts["abstained"] += 1
                continue
            keep = _order(right, lambda s: 0.0, cfg.tie_break)[: cfg.top_k]
            if wrong := next((s for s in scored if s.c.correct is False), None):
                pairs.append(Pair(cands[0].prompt, keep[0].c.text, wrong.c.text, pid, keep[0].score, wrong.score))
        else:
            ranked = _order(scored, lambda s: s.c.logprob, cfg.tie_break)
            keep = ranked[: cfg.top_k]
            if len(ranked) > 1 and ranked[0].c.logprob > ranked[-1].c.logprob:  # most vs least likely
                pairs.append(Pair(cands[0].prompt, ranked[0].c.text, ranked[-1].c.text, pid, ranked[0].score,
                                  ranked[-1].score))
        selected += [Selection(s.c.prompt, s.c.text, pid, s.c.cand_idx, s.score, s.c.correct) for s in keep]
    n = max(1, len(groups))
    verified = [s.correct for s in selected if s.correct is not None]
    stats = {
        "select/kept": len(selected),
        "select/prompts_kept": len({s.prompt_id for s in selected}) / n,
        "select/abstained": counts["abstained"] / n,
        "select/skipped_saturated": counts["saturated"] / n,
        "select/mean_score": mean(s.score for s in selected),
        "select/verified_precision": sum(verified) / len(verified) if verified else math.nan,
        "select/pairs": len(pairs),
    }
    return selected, pairs, stats
