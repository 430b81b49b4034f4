"""Judge stage: the policy scores each candidate with a rubric, its output forced into the score schema."""

from __future__ import annotations

import math
import re

from selfreward.prompting import chat, render_judge
from selfreward.verifier import is_correct


def schema_regex(reasoning_regex: str, score_prefix: str, scores) -> str:
    """The judge's output schema: optional worked check, a literal prefix, one allowed score digit.

    Kept free of literal spaces so it builds on SentencePiece vocabularies, where a space is '▁'.
    """
    choice = "[" + "".join(str(s) for s in sorted(scores)) + "]"
    return f"{reasoning_regex}{re.escape(score_prefix)}{choice}"


def judge(backend, candidates: list[dict], cfg, seed: int, system: str | None = None, desc: str = "judge") -> list[dict]:
    """One judgment row per candidate row: judge_prompt, raw output(s), score (mean of judge.n; NaN if none parsed)."""
    if cfg.kind == "verifier":
        return verify(candidates, cfg)
    regex = schema_regex(cfg.reasoning_regex, cfg.score_prefix, cfg.scores)
    judge_prompts = [render_judge(cfg.template, c["prompt"], c["text"]) for c in candidates]
    inputs = [chat(backend.tokenizer, p, system) for p in judge_prompts]
    runs = [
        backend.judge(inputs, regex, list(cfg.scores), cfg.temperature, cfg.max_new_tokens, seed + 7919 * r,
                      batch_size=cfg.batch_size, desc=desc)
        for r in range(cfg.n)
    ]
    rows = []
    for i, c in enumerate(candidates):
        outs = [run[i] for run in runs]
        values = [o.expected if cfg.scoring == "expected" else o.sampled for o in outs]
        good = [v for v in values if not math.isnan(v)]
        rows.append({
            "prompt_id": c["prompt_id"],
            "cand_idx": c["cand_idx"],
            "judge_prompt": judge_prompts[i],
            "raw": outs[0].raw if cfg.n == 1 else [o.raw for o in outs],
            "score": sum(good) / len(good) if good else math.nan,
            "parse_fail": len(values) - len(good),
        })
    return rows


def verify(candidates: list[dict], cfg) -> list[dict]:
    """Programmatic scorer (`judge=verifier`): the top score when the final answer matches the reference, else the lowest.

    Rows without a reference answer get NaN (never selected, counted as parse failures).
    """
    hi, lo = max(cfg.scores), min(cfg.scores)
    rows = []
    for c in candidates:
        ok = is_correct(c["text"], c.get("answer"))
        rows.append({"prompt_id": c["prompt_id"], "cand_idx": c["cand_idx"], "judge_prompt": None,
                     "raw": None if ok is None else str(ok).lower(),
                     "score": math.nan if ok is None else float(hi if ok else lo), "parse_fail": int(ok is None)})
    return rows
