"""Selection stage: keep the best candidates per prompt (by the judge, or a control that ignores it)."""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict

from selfreward.metrics import mean


def _order(cands: list[dict], key, tie_break: str) -> list[dict]:
    """Best first by key; ties broken by length (shortest) then candidate index: deterministic."""
    if tie_break == "shortest":
        return sorted(cands, key=lambda c: (-key(c), len(c["text"]), c["cand_idx"]))
    return sorted(cands, key=lambda c: (-key(c), c["cand_idx"]))


def length_controlled(ranked: list[dict], tolerance: float) -> list[dict]:
    """Candidates scoring within `tolerance` of the best come first, shortest first; the rest keep their order."""
    best = ranked[0]["score"]
    near = [c for c in ranked if c["score"] >= best - tolerance]
    return sorted(near, key=lambda c: (len(c["text"]), -c["score"], c["cand_idx"])) + ranked[len(near) :]


def select(candidates: list[dict], scores: dict[tuple, float], cfg, seed: int = 0) -> tuple[list[dict], list[dict], dict]:
    """(selected rows, preference pairs, stats). `scores` maps (prompt_id, cand_idx) to the judge score (NaN = failed).

    Strategies: judge (top-k at or above a threshold, with a margin rule), random, majority
    (most common final answer), logprob (highest mean token log-prob). Only `judge` reads scores.
    """
    groups: dict[str, list[dict]] = defaultdict(list)
    for c in candidates:
        groups[c["prompt_id"]].append(c)
    selected, pairs = [], []
    counts = Counter()
    margins = []
    for pid, cands in groups.items():
        scored = [dict(c, score=scores.get((pid, c["cand_idx"]), math.nan)) for c in cands]
        valid = [c for c in scored if not math.isnan(c["score"])]
        if valid:
            margins.append(max(c["score"] for c in valid) - min(c["score"] for c in valid))
        if cfg.strategy == "judge":
            if not valid:
                counts["no_valid"] += 1
                continue
            ranked = _order(valid, lambda c: c["score"], cfg.tie_break)
            worst = ranked[-1]
            margin = ranked[0]["score"] - worst["score"]
            if cfg.length_tolerance > 0:  # Meta-Rewarding's length control: near-best and shorter beats best
                ranked = length_controlled(ranked, cfg.length_tolerance)
            if len(valid) > 1 and margin < cfg.min_margin:
                counts["saturated"] += 1
                continue
            keep = [c for c in ranked[: cfg.top_k] if cfg.threshold is None or c["score"] >= cfg.threshold]
            if not keep:
                counts["abstained"] += 1
                continue
            if ranked[0] is not worst and ranked[0]["score"] - worst["score"] >= cfg.pair_margin:
                # TRL's standard preference format (prompt/chosen/rejected); the extra keys are ignored by DPOTrainer
                pairs.append({"prompt": cands[0]["prompt"], "chosen": ranked[0]["text"], "rejected": worst["text"],
                              "prompt_id": pid, "score_chosen": ranked[0]["score"], "score_rejected": worst["score"]})
        elif cfg.strategy == "random":
            rng = random.Random(f"{cfg.seed}/{seed}/{pid}")  # str seeds hash deterministically
            keep = rng.sample(scored, min(cfg.top_k, len(scored)))
        elif cfg.strategy == "majority":
            votes = Counter(c["final"] for c in scored if c.get("final") is not None)
            if not votes:
                counts["no_answer"] += 1
                continue
            top = max(votes.values())
            winner = next(c["final"] for c in sorted(scored, key=lambda c: c["cand_idx"]) if votes.get(c["final"]) == top)
            keep = _order([c for c in scored if c["final"] == winner], lambda c: 0.0, cfg.tie_break)[: cfg.top_k]
        elif cfg.strategy == "logprob":
            keep = _order(scored, lambda c: c["logprob"], cfg.tie_break)[: cfg.top_k]
        else:
            raise ValueError(f"unknown selection.strategy {cfg.strategy!r}")
        for c in keep:
            selected.append({"prompt": c["prompt"], "completion": c["text"], "prompt_id": pid, "cand_idx": c["cand_idx"],
                             "score": c["score"], "correct": c.get("correct")})
    n = max(1, len(groups))
    verified = [s["correct"] for s in selected if s["correct"] is not None]
    stats = {
        "select/kept": len(selected),
        "select/prompts_kept": len({s["prompt_id"] for s in selected}) / n,
        "select/abstained": counts["abstained"] / n,
        "select/skipped_saturated": counts["saturated"] / n,
        "select/mean_score": mean(s["score"] for s in selected),
        "select/verified_precision": sum(verified) / len(verified) if verified else math.nan,
        "select/pairs": len(pairs),
        "judge/margin": mean(margins),
    }
    return selected, pairs, stats
