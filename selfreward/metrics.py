"""Pure metric functions: judge quality against the verifier, and selection figures."""

from __future__ import annotations

import math
from collections import defaultdict


def auc(scores: list[float], labels: list[bool]) -> float:
    """Probability that a random correct item outscores a random wrong one (ties count half). NaN if one class is empty."""
    pairs = [(s, y) for s, y in zip(scores, labels) if not math.isnan(s)]
    pos = [s for s, y in pairs if y]
    neg = [s for s, y in pairs if not y]
    if not pos or not neg:
        return math.nan
    # rank-based (Mann-Whitney) so it stays O(n log n)
    ranked = sorted(pairs, key=lambda t: t[0])
    rank_sum, i = 0.0, 0
    while i < len(ranked):
        j = i
        while j < len(ranked) and ranked[j][0] == ranked[i][0]:
            j += 1
        avg_rank = (i + j + 1) / 2  # 1-based average rank of the tie group
        rank_sum += avg_rank * sum(1 for t in ranked[i:j] if t[1])
        i = j
    return (rank_sum - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))


def auc_within(groups: list[str], scores: list[float], labels: list[bool]) -> float:
    """Mean AUC over groups (prompts) that hold both correct and wrong candidates: does the judge rank one prompt's candidates?"""
    by: dict[str, tuple[list, list]] = defaultdict(lambda: ([], []))
    for g, s, y in zip(groups, scores, labels):
        by[g][0].append(s)
        by[g][1].append(y)
    values = [auc(s, y) for s, y in by.values()]
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan


def agreement(scores: list[float], labels: list[bool], accept: float) -> float:
    """Fraction of judgments whose verdict (score >= accept) matches the verifier."""
    pairs = [(s >= accept) == y for s, y in zip(scores, labels) if not math.isnan(s)]
    return sum(pairs) / len(pairs) if pairs else math.nan


def mean(values) -> float:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return sum(values) / len(values) if values else math.nan


def judge_report(candidates: list[dict], judgments: list[dict], accept: float, prefix: str = "judge/") -> dict:
    """Judge figures for judged candidates: parse failures, saturation, and (with a verifier) agreement and AUCs."""
    score = {(j["prompt_id"], j["cand_idx"]): j["score"] for j in judgments}
    fails = sum(j.get("parse_fail", 0) for j in judgments)
    tries = sum(j.get("parse_fail", 0) + (0 if math.isnan(j["score"]) else 1) for j in judgments)
    by: dict[str, list[float]] = defaultdict(list)
    for c in candidates:
        by[c["prompt_id"]].append(score.get((c["prompt_id"], c["cand_idx"]), math.nan))
    saturated = [len({round(s, 6) for s in v}) == 1 for v in by.values() if len(v) > 1 and not any(map(math.isnan, v))]
    out = {
        f"{prefix}parse_fail_rate": fails / tries if tries else 0.0,
        f"{prefix}mean_score": mean(score.values()),
        f"{prefix}saturation": sum(saturated) / len(saturated) if saturated else math.nan,
    }
    labelled = [c for c in candidates if c.get("correct") is not None]
    if labelled:
        s = [score.get((c["prompt_id"], c["cand_idx"]), math.nan) for c in labelled]
        y = [bool(c["correct"]) for c in labelled]
        out[f"{prefix}agreement"] = agreement(s, y, accept)
        out[f"{prefix}auc"] = auc(s, y)
        out[f"{prefix}auc_within"] = auc_within([c["prompt_id"] for c in labelled], s, y)
    return out
