"""Pairwise self-judging (`judge=pairwise`): the policy compares two candidates of a prompt, in both orders."""

from __future__ import annotations

import math
import random
import re
from collections import defaultdict
from itertools import combinations

from selfreward.prompting import chat, render_pairwise


def matchups(indices: list[int], opponents: int, seed: str) -> list[tuple[int, int]]:
    """The pairs to compare among one prompt's candidates: all pairs for K <= 4, else each candidate against
    `opponents` others drawn at random (seeded), duplicates merged. Cost: 2 judgments per pair."""
    if len(indices) <= 4:
        return list(combinations(indices, 2))
    rng = random.Random(seed)  # str seeds hash deterministically
    pairs = set()
    for i in indices:
        for j in rng.sample([j for j in indices if j != i], min(opponents, len(indices) - 1)):
            pairs.add((min(i, j), max(i, j)))
    return sorted(pairs)


def pairwise(backend, candidates: list[dict], cfg, seed: int, system: str | None = None,
             desc: str = "judge") -> list[dict]:
    """Score = win rate mapped onto judge.scores: min + (max - min) * wins / comparisons.

    Each pair is judged as (a, b) and (b, a), the output constrained to `score_prefix` then 1 or 2 (digits: one token
    in every vocabulary, and the backend's score-token machinery reads them). A win counts only when both orders
    name the same candidate; when they disagree (position bias) neither wins. Rows also carry `comparisons` and
    `disagree` (the judge/position_disagreement metric).
    """
    groups: dict[str, list[int]] = defaultdict(list)
    for i, c in enumerate(candidates):
        groups[c["prompt_id"]].append(i)
    pairs = [p for pid, idx in groups.items() for p in matchups(idx, cfg.opponents, f"{seed}/{pid}")]
    prompts = []
    for a, b in pairs:
        for first, second in ((a, b), (b, a)):
            prompts.append(render_pairwise(cfg.template, candidates[a]["prompt"], candidates[first]["text"],
                                           candidates[second]["text"]))
    regex = re.escape(cfg.score_prefix) + "[12]"
    outs = backend.judge([chat(backend.tokenizer, p, system) for p in prompts], regex, [1, 2], cfg.temperature,
                         cfg.max_new_tokens, seed, batch_size=cfg.batch_size, desc=f"{desc} pairwise") if prompts else []
    wins, played, disagree = defaultdict(int), defaultdict(int), defaultdict(int)
    raw: dict[int, list] = defaultdict(list)
    first_prompt: dict[int, str] = {}
    for m, (a, b) in enumerate(pairs):
        ab, ba = outs[2 * m].sampled, outs[2 * m + 1].sampled  # 1 = the response shown first is better
        raw[a].append([candidates[b]["cand_idx"], ab, ba])
        raw[b].append([candidates[a]["cand_idx"], ba, ab])
        first_prompt.setdefault(a, prompts[2 * m])
        first_prompt.setdefault(b, prompts[2 * m + 1])
        if math.isnan(ab) or math.isnan(ba):  # truncated: this comparison decides nothing
            continue
        played[a] += 1
        played[b] += 1
        a_first, a_second = ab == 1, ba == 2
        if a_first == a_second:
            wins[a if a_first else b] += 1
        else:
            disagree[a] += 1
            disagree[b] += 1
    lo, hi = min(cfg.scores), max(cfg.scores)
    rows = []
    for i, c in enumerate(candidates):
        score = lo + (hi - lo) * wins[i] / played[i] if played[i] else math.nan
        if len(groups[c["prompt_id"]]) == 1:  # nothing to compare with: every candidate is the best
            score = float(hi)
        rows.append({"prompt_id": c["prompt_id"], "cand_idx": c["cand_idx"], "judge_prompt": first_prompt.get(i),
                     "raw": raw[i], "score": score, "parse_fail": int(math.isnan(score)),
                     "comparisons": played[i], "disagree": disagree[i]})
    return rows
