"""Judge stage: score each candidate by `judge.kind`: the policy with a rubric (constrained), programs, a reward model,
both orders of pairwise comparisons, or a combination."""

from __future__ import annotations

import math
import re

from selfreward.pairwise import pairwise
from selfreward.prompting import chat, render_judge, render_pairwise
from selfreward.reward_model import reward
from selfreward.sandbox import extract_code, run_many
from selfreward.verifier import is_correct


def schema_regex(reasoning_regex: str, score_prefix: str, scores) -> str:
    """The judge's output schema: optional worked check, a literal prefix, one allowed score digit.

    Kept free of literal spaces so it builds on SentencePiece vocabularies, where a space is '▁'.
    """
    choice = "[" + "".join(str(s) for s in sorted(scores)) + "]"
    return f"{reasoning_regex}{re.escape(score_prefix)}{choice}"


def judge(backend, candidates: list[dict], cfg, seed: int, system: str | None = None, desc: str = "judge") -> list[dict]:
    """One judgment row per candidate row (prompt_id, cand_idx, judge_prompt, raw, score, parse_fail), by `judge.kind`.

    A score is NaN when the candidate could not be scored (never selected). Units differ by kind: see README.
    """
    if cfg.kind == "verifier":
        return verify(candidates, cfg, desc=desc)
    if cfg.kind == "reward_model":
        return reward(candidates, cfg.reward_model, cfg.batch_size, str(getattr(backend, "device", "cpu")), desc=desc)
    if cfg.kind == "combined":
        return combine(backend, candidates, cfg, seed, system, desc)
    if cfg.kind == "pairwise":
        return pairwise(backend, candidates, cfg, seed, system, desc)
    return self_judge(backend, candidates, cfg, seed, system, desc)


def self_judge(backend, candidates: list[dict], cfg, seed: int, system: str | None = None,
               desc: str = "judge") -> list[dict]:
    """The policy scores each candidate with the rubric (score = mean of judge.n constrained judgments)."""
    if not candidates:
        return []
    regex = schema_regex(cfg.reasoning_regex, cfg.score_prefix, cfg.scores)
    judge_prompts = [render_judge(cfg.template, c["prompt"], c["text"]) for c in candidates]
    inputs = [chat(backend.tokenizer, p, system) for p in judge_prompts]
    if cfg.reasoning_regex:
        runs = [backend.judge(inputs, regex, list(cfg.scores), cfg.temperature, cfg.max_new_tokens, seed + 7919 * r,
                              batch_size=cfg.batch_size, desc=desc) for r in range(cfg.n)]
    else:  # score only: the score token after the prefix, read in one forward pass
        scored = [x + cfg.score_prefix for x in inputs]
        runs = [backend.score_next(scored, list(cfg.scores), cfg.temperature, seed + 7919 * r,
                                   batch_size=cfg.batch_size, desc=desc) for r in range(cfg.n)]
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


def verify(candidates: list[dict], cfg, desc: str = "verify") -> list[dict]:
    """Programmatic scorer (`judge=verifier`): the top score when the candidate passes, else the lowest.

    Rows with `tests` run the candidate's code against them in the sandbox; rows with `answer` compare the final
    answer (`judge.answer_regex`); `judge.verifier` picks one of the two or `auto`. Rows with neither get NaN
    (never selected, counted as parse failures).
    """
    hi, lo = max(cfg.scores), min(cfg.scores)
    return [{"prompt_id": c["prompt_id"], "cand_idx": c["cand_idx"], "judge_prompt": None, "raw": raw,
             "score": math.nan if ok is None else float(hi if ok else lo), "parse_fail": int(ok is None)}
            for c, (ok, raw) in zip(candidates, verdicts(candidates, cfg, desc))]


def verdicts(candidates: list[dict], cfg, desc: str = "verify") -> list[tuple[bool | None, str | None]]:
    """(passed, raw) per candidate: True/False, or None without a reference; raw says why (answer match or test status)."""
    modes = [_verifier(c, cfg.verifier) for c in candidates]
    jobs = {}  # identical (code, tests) run once: K samples often repeat
    for c, mode in zip(candidates, modes):
        if mode == "code":
            jobs.setdefault(_job_key(c), {"code": extract_code(c["text"]), "tests": c["tests"],
                                          "entry_point": c.get("entry_point")})
    results = dict(zip(jobs, run_many(list(jobs.values()), cfg.workers, cfg.timeout, cfg.memory_mb, desc=desc)))
    out = []
    for c, mode in zip(candidates, modes):
        if mode == "code":
            r = results[_job_key(c)]
            last = r.output.strip().splitlines()[-1:] if not r.passed else []
            out.append((r.passed, ": ".join([r.status, *last])[:300]))
        elif mode == "answer":
            ok = is_correct(c["text"], c["answer"], cfg.answer_regex)
            out.append((ok, str(ok).lower()))
        else:
            out.append((None, None))
    return out


def _verifier(row: dict, which: str) -> str | None:
    if which in ("auto", "code") and row.get("tests"):
        return "code"
    if which in ("auto", "answer") and row.get("answer") is not None:
        return "answer"
    return None


def _job_key(row: dict) -> tuple:
    return extract_code(row["text"]), row["tests"], row.get("entry_point")


def combine(backend, candidates: list[dict], cfg, seed: int, system: str | None = None, desc: str = "judge") -> list[dict]:
    """`judge.kind=combined`. gate: the verifier decides pass/fail; a passing candidate gets its self-judge score
    (in judge.scores), a failing one min(judge.scores) - 1, so any pass outranks every fail and selection.threshold
    keeps its meaning. weighted: sum over judge.weights of weight * that scorer's score, each in its own units.
    """
    if cfg.combine == "gate":
        checks = verdicts(candidates, cfg, desc=f"{desc} verify")
        passing = [i for i, (ok, _) in enumerate(checks) if ok]
        # the self-judge runs only where it decides something: on the passing candidates
        judged = dict(zip(passing, self_judge(backend, [candidates[i] for i in passing], cfg, seed, system, desc)))
        rows = []
        for i, (c, (ok, raw)) in enumerate(zip(candidates, checks)):
            s = judged.get(i)
            score = math.nan if ok is None else s["score"] if s else float(min(cfg.scores) - 1)
            rows.append({"prompt_id": c["prompt_id"], "cand_idx": c["cand_idx"], "judge_prompt": s and s["judge_prompt"],
                         "raw": {"verifier": raw, "self": s and s["raw"]}, "score": score,
                         "parse_fail": int(ok is None) + (s["parse_fail"] if s else 0)})
        return rows
    weights = {k: float(w) for k, w in cfg.weights.items() if w}
    parts = {}
    if "verifier" in weights:
        parts["verifier"] = verify(candidates, cfg, desc=f"{desc} verify")
    if "self" in weights:
        parts["self"] = self_judge(backend, candidates, cfg, seed, system, desc)
    if "reward_model" in weights:
        parts["reward_model"] = reward(candidates, cfg.reward_model, cfg.batch_size, str(getattr(backend, "device", "cpu")))
    return [{"prompt_id": c["prompt_id"], "cand_idx": c["cand_idx"],
             "judge_prompt": parts["self"][i]["judge_prompt"] if "self" in parts else None,
             "raw": {k: rows[i]["score"] for k, rows in parts.items()},
             "score": sum(w * parts[k][i]["score"] for k, w in weights.items()),  # NaN in any part stays NaN
             "parse_fail": sum(rows[i]["parse_fail"] for rows in parts.values())}
            for i, c in enumerate(candidates)]


def policy_judge_prompt(cfg, prompt: str) -> tuple[str, int] | None:
    """(the policy's judge prompt for `prompt` with empty responses, responses it holds), or None when the policy does
    not judge (verifier, reward model): what the loop's context check must fit."""
    uses_self = cfg.kind == "self" or (cfg.kind == "combined" and (cfg.combine == "gate" or cfg.weights.get("self")))
    if cfg.kind == "pairwise":
        return render_pairwise(cfg.template, prompt, "", ""), 2
    return (render_judge(cfg.template, prompt, ""), 1) if uses_self else None
