"""Pairwise self-judging (`judge=pairwise`): the policy compares two candidates of a prompt, in both orders."""

from __future__ import annotations

import math
import random
import re
from collections import defaultdict
from dataclasses import dataclass
from itertools import combinations

from selfreward.prompting import chat, render_pairwise
from selfreward.records import Candidate, Judgment, PromptFormat, by_prompt
from selfreward.schema import JudgeConfig, opt, require

uses_policy = True


@dataclass
class PairwiseSettings:
    template: str = opt("pairwise.jinja", "Jinja rubric with {{ prompt }}, {{ first }} and {{ second }}")
    score_prefix: str = opt("Better:", "literal text before the verdict digit (1 or 2); must be spellable in the "
                                       "model's vocabulary (the built-in char tokenizer is lowercase)")
    temperature: float = opt(0.0, "judge sampling temperature (0 = greedy)")
    max_new_tokens: int = opt(8, "judge output budget in tokens")
    opponents: int = opt(3, "with K > 4: random opponents per candidate (K <= 4: all pairs)")

    def __post_init__(self):
        require(self.opponents >= 1, "judge.pairwise.opponents must be >= 1")


@dataclass
class Config(JudgeConfig):
    pairwise: PairwiseSettings = opt(PairwiseSettings(), "the comparison rubric")


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


def score(backend, candidates: list[Candidate], cfg, seed: int, *, fmt: PromptFormat | None = None,
          desc: str = "judge") -> list[Judgment]:
    """Score = win rate mapped onto judge.scores: min + (max - min) * wins / comparisons.

    Each pair is judged as (a, b) and (b, a), the output constrained to `score_prefix` then 1 or 2 (digits: one token
    in every vocabulary, and the backend's score-token machinery reads them). A win counts only when both orders
    name the same candidate; when they disagree (position bias) neither wins. Rows also carry `comparisons` and
    `disagree` (the judge/position_disagreement metric).
    """
    p = cfg.pairwise
    position = {id(c): i for i, c in enumerate(candidates)}
    groups = {pid: [position[id(c)] for c in cands] for pid, cands in by_prompt(candidates).items()}
    pairs = [pair for pid, idx in groups.items() for pair in matchups(idx, p.opponents, f"{seed}/{pid}")]
    prompts = []
    for a, b in pairs:
        for first, second in ((a, b), (b, a)):
            prompts.append(render_pairwise(p.template, candidates[a].prompt, candidates[first].text,
                                           candidates[second].text))
    regex = re.escape(p.score_prefix) + "[12]"
    inputs = [chat(backend.tokenizer, x, (fmt or PromptFormat()).judge) for x in prompts]
    outs = backend.judge(inputs, regex, [1, 2], p.temperature, p.max_new_tokens, seed, batch_size=cfg.batch_size,
                         desc=f"{desc} pairwise") if prompts else []
    wins, played, disagree = defaultdict(int), defaultdict(int), defaultdict(int)
    raw: dict[int, list] = defaultdict(list)
    first_prompt: dict[int, str] = {}
    unconstrained: dict[int, int] = defaultdict(int)
    for m, (a, b) in enumerate(pairs):
        for i in (a, b):
            unconstrained[i] += outs[2 * m].unconstrained + outs[2 * m + 1].unconstrained
        ab, ba = outs[2 * m].sampled, outs[2 * m + 1].sampled  # 1 = the response shown first is better
        raw[a].append([candidates[b].cand_idx, ab, ba])
        raw[b].append([candidates[a].cand_idx, ba, ab])
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
    out = []
    for i, c in enumerate(candidates):
        value = lo + (hi - lo) * wins[i] / played[i] if played[i] else math.nan
        if len(groups[c.prompt_id]) == 1:  # nothing to compare with: every candidate is the best
            value = float(hi)
        out.append(Judgment.of(c, value, raw=raw[i], judge_prompt=first_prompt.get(i),
                               parse_fail=int(math.isnan(value)),
                               comparisons=played[i], disagree=disagree[i],
                               unconstrained=unconstrained[i] or None))
    return out


def judge_prompt(cfg, prompt: str) -> tuple[str, int, int]:
    """The comparison prompt for `prompt` with empty responses (it holds two) and the judge's output budget."""
    return render_pairwise(cfg.pairwise.template, prompt, "", ""), 2, cfg.pairwise.max_new_tokens
