"""The judge measured where no verifier exists: labelled preference pairs (`eval.preferences`).

At iteration 0 and after every iteration the run's own scorer judges both responses of every pair, as it judges
candidates: `judge/pref_accuracy` is the share of pairs whose chosen response scores above the rejected one (ties
count half), the pairwise accuracy the Self-Rewarding LMs paper measured its judge by.

Sources: `task` (the built-in task's held-out prompts: the reference answer against a near miss), a JSONL file of
`prompt`/`chosen`/`rejected` rows (a run's `pairs.jsonl` is one), or `hf:NAME[@CONFIG]:SPLIT` (UltraFeedback
binarized's `test_prefs`, HH-RLHF, RewardBench). A response given as a chat-message list is its last assistant turn,
and its prompt the turns before (where the row has no `prompt`); an HH-RLHF transcript is split at its last
"Assistant:" turn.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

from selfreward import scorers
from selfreward.data import DataError, check_rejected, dataset_split, sequence_task
from selfreward.prompting import chat
from selfreward.records import Candidate, Judgment, Preference, PromptFormat
from selfreward.rundir.artifacts import write_jsonl
from selfreward.tasks import equation, sequence

_HH_TURN = "\n\nAssistant:"
TASKS = ("equation", "sequence")  # the built-in tasks with preference pairs of their own


def load(cfg, run_dir: Path, fits=None) -> list[Preference]:
    """The run's preference set (`eval.preferences`, at most `eval.preferences_n` pairs), also written to
    RUN/preferences.jsonl; rows that cannot be used go to RUN/rejected_preferences.jsonl with file, line and reason."""
    spec, n = cfg.eval.preferences, cfg.eval.preferences_n
    if not spec:
        return []
    if spec == "task" and cfg.data.task not in TASKS:
        return []  # the task has no pairs of its own: a verifier or a given preference set measures the judge
    if spec == "task":
        good, bad = task_pairs(cfg.data, n), []
    else:
        good, bad = read(spec, fits)
    check_rejected(f"eval.preferences={spec}", len(good), bad, cfg.data.max_reject_fraction)
    if not good:
        raise DataError(f"eval.preferences={spec}: no usable preference pair")
    if bad:
        write_jsonl(Path(run_dir) / "rejected_preferences.jsonl", bad)
    good = good[:n]
    write_jsonl(Path(run_dir) / "preferences.jsonl", good)
    return good


def task_pairs(data_cfg, n: int) -> list[Preference]:
    """n pairs from the built-in task's held-out part of the problem space: the reference answer written as the
    task's responses are, against a near miss (off by a little, a digit changed, a slip of ten)."""
    rng = random.Random(data_cfg.seed + 3)
    if data_cfg.task not in TASKS:
        raise DataError(f"eval.preferences=task: data.task={data_cfg.task} has no built-in preference pairs (equation "
                        "and sequence have); give a JSONL file or hf:NAME[@CONFIG]:SPLIT of prompt/chosen/rejected "
                        "rows")
    if data_cfg.task == "equation":
        task = equation.EquationTask(data_cfg.equation_max_a, data_cfg.equation_max_x, data_cfg.equation_max_b)
        rows, say = equation.pool(task, n, data_cfg.seed + 3, evaluation=True), task.response
    else:
        task = sequence_task(data_cfg)
        held_out = [r for r in task.space() if sequence.part(r["prompt"]) == sequence.EVAL]
        rows, say = sequence.pool(task, min(n, len(held_out)), data_cfg.seed + 3, sequence.EVAL), " {}".format
    return [Preference(f"pref-{r['id']}", r["prompt"], say(r["answer"]), say(equation.near_miss(int(r["answer"]), rng)),
                       r["answer"]) for r in rows]


def read(spec: str, fits=None) -> tuple[list[Preference], list[dict]]:
    """Good pairs and rejected rows (file, line, reason) of a JSONL file or an `hf:` dataset split."""
    if spec.startswith("hf:"):
        parts = spec[3:].split(":")
        if len(parts) != 2:
            raise DataError(f"eval.preferences={spec!r}: expected hf:NAME[@CONFIG]:SPLIT")
        (name, _, config), split = parts[0].partition("@"), parts[1]
        try:
            rows = enumerate(dataset_split(name, config, split, "test"))
        except Exception as e:  # offline, unknown name or split: say which and why
            raise DataError(f"eval.preferences: dataset {name!r} split {split!r} could not be loaded: "
                            f"{type(e).__name__}: {e}") from e
        source = f"{name}:{split}"
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise DataError(f"eval.preferences: file not found: {path}")
        rows, source = _jsonl(path), str(path)
    good, bad, seen = [], [], set()
    for line, row in rows:
        pair, why = (None, row) if isinstance(row, str) else parse(row, f"{Path(source).stem}-{line}")
        if pair is not None and pair.id in seen:
            pair, why = None, f"duplicate id {pair.id!r}"
        if pair is not None and fits is not None:
            why = fits(pair.prompt, max(pair.chosen, pair.rejected, key=len))
            pair = None if why else pair
        if pair is None:
            bad.append({"file": source, "line": line, "reason": why, "text": str(row)[:200]})
        else:
            seen.add(pair.id)
            good.append(pair)
    return good, bad


def _jsonl(path: Path):
    """(line number, row dict) per non-empty line; a line that is not a JSON object gives its reason instead."""
    for n, line in enumerate(path.read_bytes().split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            yield n, f"malformed line: {e}"
            continue
        yield n, row if isinstance(row, dict) else "not a JSON object"


def parse(row: dict, default_id: str) -> tuple[Preference | None, str | None]:
    """One row as a pair, or the reason it is not one."""
    missing = [k for k in ("chosen", "rejected") if k not in row]
    if missing:
        return None, f"no {' or '.join(repr(k) for k in missing)} field"
    (p1, chosen), (p2, rejected) = _response(row["chosen"]), _response(row["rejected"])
    prompt = row.get("prompt")
    if isinstance(prompt, list):
        prompt = _turns(prompt)
    if prompt is None:
        if p1 != p2:
            return None, "no 'prompt' field, and chosen and rejected continue different conversations"
        prompt = p1
    for name, text in (("prompt", prompt), ("chosen", chosen), ("rejected", rejected)):
        if not isinstance(text, str) or not text.strip():
            return None, f"no text in {name!r}"
    rid = str(row.get("id") or default_id)  # not prompt_id: one prompt may give several pairs (pairs.jsonl)
    answer = row.get("answer")
    return Preference(rid, prompt, chosen, rejected, None if answer is None else str(answer)), None


def _response(value) -> tuple[str | None, str | None]:
    """(the conversation before the response, the response) of a chosen/rejected value: a string, a chat-message
    list (its last assistant turn), or an HH-RLHF transcript (its last 'Assistant:' turn)."""
    if isinstance(value, list):
        last = max((i for i, m in enumerate(value) if isinstance(m, dict) and m.get("role") == "assistant"),
                   default=None)
        if last is None:
            return None, None
        return _turns(value[:last]), value[last].get("content")
    if isinstance(value, str) and _HH_TURN in value:
        before, _, after = value.rpartition(_HH_TURN)
        return before.strip(), after.strip()
    return None, value if isinstance(value, str) else None


def _turns(messages: list) -> str | None:
    """A conversation as the judge's prompt text: one user turn as it is, more turns labelled by role."""
    turns = [m for m in messages if isinstance(m, dict) and isinstance(m.get("content"), str)]
    if len(turns) == 1:
        return turns[0]["content"]
    return "\n\n".join(f"{m.get('role', 'user').capitalize()}: {m['content']}" for m in turns) or None


def context_check(cfg, tokenizer, context: int):
    """`fits(prompt, longest response) -> reason | None`: the judge prompt holding the responses must fit."""
    scorer = scorers.of(cfg.judge)

    def check(prompt: str, response: str) -> str | None:
        if (judged := scorer.judge_prompt(cfg.judge, prompt)) is None:  # no policy judge prompt
            return None
        text, responses, budget = judged
        judge_input = chat(tokenizer, text, PromptFormat.of(cfg.sampling).judge)
        n = len(tokenizer(judge_input, add_special_tokens=False).input_ids)
        n += responses * len(tokenizer(response, add_special_tokens=False).input_ids) + budget
        return f"judge prompt with the response is {n} tokens, over the context ({context})" if n > context else None

    return check


def measure(backend, pairs: list[Preference], cfg, seed: int) -> tuple[list[Judgment], dict]:
    """The run's judge on both responses of every pair: its judgments (chosen: cand_idx 0, rejected: 1) and
    `judge/pref_accuracy`, `judge/pref_ties`, `judge/pref_pairs` (scored pairs), `judge/pref_unscored`, and for
    `judge=pairwise` `judge/pref_order_agreement` (both orders named the same response)."""
    cands = [Candidate(p.id, p.prompt, j, text, 0, p.answer, None, math.nan, math.nan, None)
             for p in pairs for j, text in enumerate((p.chosen, p.rejected))]
    judgments = scorers.score(backend, cands, cfg.judge, seed, fmt=PromptFormat.of(cfg.sampling),
                              desc="preference judge")
    out = accuracy([(judgments[2 * i].score, judgments[2 * i + 1].score) for i in range(len(pairs))])
    if any(j.comparisons is not None for j in judgments):
        played = sum(j.comparisons for j in judgments)
        out["judge/pref_order_agreement"] = 1 - sum(j.disagree for j in judgments) / played if played else math.nan
    return judgments, out


def accuracy(scored: list[tuple[float, float]]) -> dict:
    """Preference accuracy of (chosen score, rejected score) pairs: chosen above counts 1, a tie (equal to 6
    decimals) 1/2; pairs with an unscored side are left out and counted. NaN when no pair was scored."""
    valid = [(round(c, 6), round(r, 6)) for c, r in scored if not (math.isnan(c) or math.isnan(r))]
    ties = sum(c == r for c, r in valid)
    wins = sum(c > r for c, r in valid)
    n = len(valid)
    return {"judge/pref_accuracy": (wins + ties / 2) / n if n else math.nan,
            "judge/pref_ties": ties / n if n else math.nan,
            "judge/pref_pairs": n, "judge/pref_unscored": len(scored) - n}
