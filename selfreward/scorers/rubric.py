"""The rubric self-judge (`judge=rubric`, `judge=rubric5`): the policy judges each candidate with a rubric from
`prompts/`, its output forced into the score schema by Outlines, so a judgment always parses."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from selfreward.prompting import chat, render_judge
from selfreward.records import Candidate, Judgment, PromptFormat
from selfreward.rng import repeat
from selfreward.schema import JudgeConfig, choices, opt, require

uses_policy = True


Scoring = choices("Scoring", "expected", "sampled", module=__name__)


@dataclass
class RubricSettings:
    template: str = opt("equation_check.jinja", "Jinja rubric with {{ prompt }} and {{ response }}: a file in prompts/ "
                                                "or any path")
    reasoning_regex: str = opt(r"[0-9]{1,2}\*[0-9]{1,4}=[0-9]{1,5};[0-9]{1,5}\+[0-9]{1,3}=[0-9]{3,5}\|[0-9]{3,5}",
                               "regex of the judge's worked check before the score ('' = score only, one forward pass)")
    score_prefix: str = opt(":", "literal text between the reasoning and the score")
    scoring: Scoring = opt(Scoring.expected, "expected: probability-weighted score token; sampled: the decoded token")
    n: int = opt(1, "judge samples per candidate, averaged")
    temperature: float = opt(0.0, "judge sampling temperature (0 = greedy)")
    max_new_tokens: int = opt(40, "judge output budget in tokens")

    def __post_init__(self):
        require(self.n >= 1, "judge.rubric.n must be >= 1")
        require(self.n == 1 or self.temperature > 0,
                "judge.rubric.n > 1 averages samples: set judge.rubric.temperature > 0")


@dataclass
class Config(JudgeConfig):
    rubric: RubricSettings = opt(RubricSettings(), "the rubric and its score schema")


def schema_regex(reasoning_regex: str, score_prefix: str, scores) -> str:
    """The judge's output schema: optional worked check, a literal prefix, one allowed score digit.

    Kept free of literal spaces so it builds on SentencePiece vocabularies, where a space is '▁'.
    """
    choice = "[" + "".join(str(s) for s in sorted(scores)) + "]"
    return f"{reasoning_regex}{re.escape(score_prefix)}{choice}"


def score(backend, candidates: list[Candidate], cfg, seed: int, *, fmt: PromptFormat | None = None,
          desc: str = "judge") -> list[Judgment]:
    """The policy scores each candidate with the rubric (score = mean of judge.rubric.n constrained judgments)."""
    return judge_with(backend, candidates, cfg.rubric, cfg.scores, cfg.batch_size, seed, fmt, desc)


def judge_with(backend, candidates: list[Candidate], r: RubricSettings, scores: list[int], batch_size: int, seed: int,
               fmt: PromptFormat | None = None, desc: str = "judge") -> list[Judgment]:
    """`score` with the rubric settings given apart (the combined scorer holds its own)."""
    if not candidates:
        return []
    regex = schema_regex(r.reasoning_regex, r.score_prefix, scores)
    judge_prompts = [render_judge(r.template, c.prompt, c.text) for c in candidates]
    inputs = [chat(backend.tokenizer, p, (fmt or PromptFormat()).judge) for p in judge_prompts]
    if r.reasoning_regex:
        runs = [backend.judge(inputs, regex, list(scores), r.temperature, r.max_new_tokens, repeat(seed, n),
                              batch_size=batch_size, desc=desc) for n in range(r.n)]
    else:  # score only: the score token after the prefix, read in one forward pass
        scored = [x + r.score_prefix for x in inputs]
        runs = [backend.score_next(scored, list(scores), r.temperature, repeat(seed, n),
                                   batch_size=batch_size, desc=desc) for n in range(r.n)]
    out = []
    for i, c in enumerate(candidates):
        outs = [run[i] for run in runs]
        values = [o.expected if r.scoring == Scoring.expected else o.sampled for o in outs]
        good = [v for v in values if not math.isnan(v)]
        out.append(Judgment.of(c, sum(good) / len(good) if good else math.nan,
                               raw=outs[0].raw if r.n == 1 else [o.raw for o in outs],
                               judge_prompt=judge_prompts[i], parse_fail=len(values) - len(good),
                               unconstrained=sum(o.unconstrained for o in outs) or None))
    return out


def judge_prompt(cfg, prompt: str) -> tuple[str, int, int]:
    """What must fit the context: the judge prompt for `prompt` with an empty response, how many responses it holds,
    and the judge's output budget."""
    return render_judge(cfg.rubric.template, prompt, ""), 1, cfg.rubric.max_new_tokens
