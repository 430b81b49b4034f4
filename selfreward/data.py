"""Prompt sources (built-in task or JSONL files), validation with quarantine, per-iteration slices."""

from __future__ import annotations

import json
from pathlib import Path

from datasets import load_dataset, load_from_disk

from selfreward import scorers
from selfreward.observe.metrics import overlapping
from selfreward.prompting import chat
from selfreward.records import Prompt, PromptFormat
from selfreward.rundir.artifacts import write_jsonl
from selfreward.schema import ConfigError
from selfreward.tasks import humaneval, sequence
from selfreward.tasks.equation import EquationTask, pool


class DataError(ValueError):
    """A prompt file that cannot be used, named with where it failed."""


def builtin(cfg) -> tuple[list[Prompt], list[Prompt]]:
    """(training pool, held-out evaluation set) of a built-in task; disjoint by construction."""
    if cfg.task == "humaneval":
        return humaneval.load()
    if cfg.task == "sequence":
        task = sequence_task(cfg)
        try:
            return ([Prompt.from_row(r) for r in sequence.pool(task, cfg.n_train, cfg.seed, sequence.TRAIN)],
                    [Prompt.from_row(r) for r in sequence.pool(task, cfg.n_eval, cfg.seed + 1, sequence.EVAL)])
        except ValueError as e:
            raise DataError(f"data.n_train={cfg.n_train}, data.n_eval={cfg.n_eval}: {e}") from e
    if cfg.task != "equation":
        raise DataError(f"data.task={cfg.task!r}: the built-in tasks are 'equation', 'sequence' and 'humaneval' (or "
                        "give data.train_prompts and data.eval_prompts)")
    task = EquationTask(cfg.equation_max_a, cfg.equation_max_x, cfg.equation_max_b)
    train = pool(task, cfg.n_train, cfg.seed, evaluation=False)
    evals = pool(task, cfg.n_eval, cfg.seed + 1, evaluation=True)
    return [Prompt.from_row(r) for r in train], [Prompt.from_row(r) for r in evals]


def sequence_task(cfg) -> sequence.SequenceTask:
    return sequence.SequenceTask(cfg.sequence_min_terms, cfg.sequence_max_terms, cfg.sequence_min_start,
                                 cfg.sequence_max_start, cfg.sequence_min_step, cfg.sequence_max_step)


def seed_pool(cfg, n: int) -> list[Prompt] | None:
    """The built-in task's own seed split for M0 (a part of its problem space that the loop's training and evaluation
    never draw from), or None where the task has none (M0 then takes the end of the training pool)."""
    if cfg.task != "sequence":
        return None
    try:
        rows = sequence.pool(sequence_task(cfg), n, cfg.seed + 2, sequence.SEED)
    except ValueError as e:
        raise ConfigError(f"model.bootstrap.prompts={n}: {e}") from e
    return [Prompt.from_row(r) for r in rows]


def read_dataset(spec: str, fits=None, prompt_field: str = "prompt", answer_field: str = "answer",
                 role: str = "train") -> tuple[list[Prompt], list[dict]]:
    """Prompts from a Hugging Face dataset: `hf:NAME[@CONFIG]:SPLIT[:FIELD]` (`hf:openai/gsm8k@main:train`; NAME may
    be a directory written by `save_to_disk`; FIELD overrides `data.prompt_field`; a list of chat messages uses its
    first user turn). Where SPLIT names no split, it is read as the config and the split is the `role`'s (`train` for
    data.train_prompts, `test` for data.eval_prompts), so `hf:openai/gsm8k:main` serves both. Rows are validated like
    JSONL lines; the row index stands for the line."""
    parts = spec[3:].split(":")
    if len(parts) not in (2, 3):
        raise DataError(f"dataset spec {spec!r}: expected hf:NAME[@CONFIG]:SPLIT or hf:NAME[@CONFIG]:SPLIT:FIELD")
    (name, _, config), split = parts[0].partition("@"), parts[1]
    field = parts[2] if len(parts) == 3 else prompt_field
    try:
        ds = dataset_split(name, config, split, role)
    except Exception as e:  # offline, unknown name or split: say which and why
        raise DataError(f"dataset {name!r} split {split!r} could not be loaded: {type(e).__name__}: {e}") from e
    good, bad, seen = [], [], set()
    for n, row in enumerate(ds):
        prompt = row.get(field)
        if isinstance(prompt, list):  # chat messages
            prompt = next((m.get("content") for m in prompt if isinstance(m, dict) and m.get("role") == "user"), None)
        rid = str(row.get("id") or row.get("prompt_id") or f"{name}-{split}-{n}")
        if not isinstance(prompt, str) or not prompt.strip():
            out, why = None, f"no text in field {field!r}"
        else:
            out, why = _accept(row, prompt, rid, seen, fits, answer_field)
        if why:
            bad.append({"file": f"{name}:{split}", "line": n, "reason": why, "text": str(prompt)[:200]})
        else:
            good.append(out)
    return good, bad


def dataset_split(name: str, config: str, split: str, role: str):
    """One split of a dataset on disk (`save_to_disk`) or on the Hub; SPLIT that names no split is the config."""
    if (Path(name) / "dataset_dict.json").is_file():
        splits = load_from_disk(name)
        return splits[split] if split in splits or role not in splits else splits[role]
    try:
        return load_dataset(name, config or None, split=split)
    except ValueError:  # not a split of the default config: `hf:openai/gsm8k:main` names the config
        if config:
            raise
        return load_dataset(name, split, split=role)


def _accept(row: dict, prompt: str, rid: str, seen: set, fits,
            answer_field: str = "answer") -> tuple[Prompt | None, str | None]:
    """The rules every prompt source shares: a unique id, a prompt that fits the context; the kept row carries
    `answer` and, for code tasks, `tests` and `entry_point`. Returns (row, None) or (None, reason)."""
    if rid in seen:
        return None, f"duplicate id {rid!r}"
    if fits is not None and (why := fits(prompt)):
        return None, why
    seen.add(rid)
    out = {"id": rid, "prompt": prompt}
    if row.get(answer_field) is not None:
        out["answer"] = str(row[answer_field])
    for key in ("tests", "entry_point", "prefix"):  # code tasks: the verifier runs (prefix +) response, then tests
        if row.get(key) is not None:
            out[key] = str(row[key])
    return Prompt.from_row(out), None


def read_prompts(path: str, fits=None, prompt_field: str = "prompt", answer_field: str = "answer",
                 role: str = "train") -> tuple[list[Prompt], list[dict]]:
    """Good rows and rejected rows (with line number and reason) of a JSONL prompt file.

    `fits(prompt) -> str | None` returns a reason when a prompt does not fit the model's context.
    """
    if path.startswith("hf:"):
        return read_dataset(path, fits, prompt_field, answer_field, role)
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"prompt file not found: {p}")
    good, bad, seen = [], [], set()
    raw = p.read_bytes()
    lines = raw.split(b"\n")

    def reject(n: int, line: bytes, reason: str) -> None:
        bad.append({"file": str(p), "line": n, "reason": reason, "text": line[:200].decode("utf-8", "replace")})

    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            reject(n, line, f"not UTF-8 ({e.reason} at byte {e.start})")
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as e:
            truncated = n == len(lines) and not raw.endswith(b"\n")
            reject(n, line, ("truncated last line: " if truncated else "malformed JSON: ") + e.msg)
            continue
        if not isinstance(row, dict) or prompt_field not in row:
            reject(n, line, f"no {prompt_field!r} field")
            continue
        if not isinstance(row[prompt_field], str) or not row[prompt_field].strip():
            reject(n, line, "empty prompt")
            continue
        out, why = _accept(row, row[prompt_field], str(row.get("id", f"{p.stem}-{n}")), seen, fits, answer_field)
        if why:
            reject(n, line, why)
            continue
        good.append(out)
    if not good and bad:
        raise DataError(f"{p}: no usable rows; first problem at line {bad[0]['line']}: {bad[0]['reason']}")
    return good, bad


def load(cfg, run_dir: Path, fits=None) -> tuple[list[Prompt], list[Prompt], dict]:
    """Training pool and evaluation prompts; rejected rows go to RUN/rejected.jsonl."""
    train, evals = builtin(cfg) if cfg.task else ([], [])
    rejected: list[dict] = []
    if fits is not None and cfg.task == "equation":  # short prompts of one shape: the longest decides
        longest = max(train + evals, key=lambda r: len(r.prompt)).prompt
        if why := fits(longest):
            raise ConfigError(f"built-in prompt {longest!r}: {why}")
    elif fits is not None and cfg.task:  # quarantined like a file's rows, the task name standing for the file
        train, evals = _fitting(train, fits, f"task:{cfg.task}", rejected), _fitting(evals, fits, f"task:{cfg.task}",
                                                                                     rejected)
        if not train or not evals:
            raise DataError(f"data.task={cfg.task}: no {'training' if not train else 'held-out'} prompt fits the "
                            f"model's context (first: {rejected[0]['reason']}); use a model with a longer context")
    for name in ("train_prompts", "eval_prompts"):
        path = getattr(cfg, name)
        if not path:
            continue
        rows, bad = read_prompts(path, fits, cfg.prompt_field, cfg.answer_field,
                                 role="train" if name == "train_prompts" else "test")
        check_rejected(f"data.{name}={path}", len(rows), bad, cfg.max_reject_fraction)
        rejected += bad
        if name == "train_prompts":
            train = rows
        else:
            evals = rows
    if rejected:
        write_jsonl(Path(run_dir) / "rejected.jsonl", rejected)
    evals, stats = decontaminate(train, evals, cfg, run_dir)
    return train, evals, {"data/train_prompts": len(train), "data/eval_prompts": len(evals),
                          "data/rejected": len(rejected), **stats}


def check_rejected(source: str, good: int, bad: list[dict], max_fraction: float) -> None:
    """Stop before any compute when more than `max_fraction` of a source's rows were rejected, naming the first."""
    total = good + len(bad)
    if total and len(bad) / total > max_fraction:
        first = "; ".join(f"line {b['line']}: {b['reason']}" for b in bad[:3])
        raise DataError(f"{source}: {len(bad)} of {total} rows rejected (over data.max_reject_fraction="
                        f"{max_fraction}); first: {first}")


def _fitting(prompts: list[Prompt], fits, source: str, rejected: list[dict]) -> list[Prompt]:
    """The prompts that fit the context; the others appended to `rejected` with the reason."""
    kept = []
    for n, p in enumerate(prompts):
        if why := fits(p.prompt):
            rejected.append({"file": source, "line": n, "reason": why, "text": p.prompt[:200]})
        else:
            kept.append(p)
    return kept


def decontaminate(train: list[Prompt], evals: list[Prompt], cfg, run_dir: Path) -> tuple[list[Prompt], dict]:
    """Check evaluation prompts against training prompts before any compute; drop, stop, or only report overlaps."""
    hits = set(overlapping([r.prompt for r in train], [r.prompt for r in evals], cfg.contamination_n))
    stats = {"contamination/overlap": len(hits) / max(1, len(evals)), "contamination/overlapping": len(hits)}
    if not hits:
        return evals, stats
    found = [evals[i] for i in sorted(hits)]
    write_jsonl(Path(run_dir) / "contaminated.jsonl", found)
    if cfg.on_contamination == "stop":
        raise DataError(f"{len(hits)} evaluation prompts overlap training prompts ({cfg.contamination_n}-gram or "
                        f"exact), e.g. {found[0].prompt[:80]!r}; listed in contaminated.jsonl. Set "
                        "data.on_contamination=drop to go on.")
    if cfg.on_contamination == "drop":
        evals = [r for i, r in enumerate(evals) if i not in hits]
    return evals, stats


def for_iteration(train: list[Prompt], iteration: int, n: int) -> list[Prompt]:
    """The iteration's prompts: a fresh slice of the pool each round (wrapping around), or all when n=0."""
    if n <= 0 or n >= len(train):
        return train
    start = ((iteration - 1) * n) % len(train)
    picked = train[start : start + n]
    return picked + train[: n - len(picked)]


def context_check(cfg, tokenizer, context: int):
    """`fits(prompt) -> reason | None`: the prompt, its generation budget and the judge prompt built from it must fit
    the model's context (the policy's judge prompt, where the scorer has one)."""
    s, scorer, fmt = cfg.sampling, scorers.of(cfg.judge), PromptFormat.of(cfg.sampling)

    def n_tokens(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False).input_ids)

    def check(prompt: str) -> str | None:
        p = n_tokens(chat(tokenizer, prompt, fmt))
        if p + s.max_new_tokens > context:
            return (f"prompt is {p} tokens; with sampling.max_new_tokens={s.max_new_tokens} it exceeds the context "
                    f"({context})")
        if (judged := scorer.judge_prompt(cfg.judge, prompt)) is None:  # verifier, reward model: no policy judge prompt
            return None
        text, responses, budget = judged
        jp = n_tokens(chat(tokenizer, text, fmt.judge))
        if jp + responses * s.max_new_tokens + budget > context:
            return (f"judge prompt is {jp} tokens; with {responses} response(s) of {s.max_new_tokens} and the judge's "
                    f"max_new_tokens ({budget}) it exceeds the context ({context})")
        return None

    return check
