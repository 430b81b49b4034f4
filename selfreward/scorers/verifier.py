"""The verifier (`judge=verifier`): programs score each candidate, an answer match or the candidate's code run
against the row's tests in the sandbox. The same answer check labels every candidate `correct` (to measure the
judge: in the loop the verifier only measures, unless it is the chosen scorer)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from selfreward.records import Candidate, Judgment
from selfreward.schema import ConfigError, JudgeConfig, choices, opt, require
from selfreward.scorers.sandbox import extract_code, run_many

uses_policy = False


Mode = choices("Mode", "auto", "answer", "code", module=__name__)


@dataclass
class VerifierSettings:
    mode: Mode = opt(Mode.auto, "auto: rows with `tests` run code, rows with `answer` match it; answer or code: only "
                                "that")
    answer_regex: str | None = opt(None, "regex whose group 1 is the final answer (None: \\boxed{} value, else the "
                                         "last number)")
    timeout: float = opt(5.0, "wall-clock seconds per code-test run (then it fails)")
    memory_mb: int = opt(1024, "address-space limit of a code-test run in MiB")
    workers: int = opt(2, "code-test runs in parallel")

    def __post_init__(self):
        if self.answer_regex is not None:
            try:
                groups = re.compile(self.answer_regex).groups
            except re.error as e:
                raise ConfigError(f"judge.verifier.answer_regex={self.answer_regex!r} does not compile: {e}") from e
            require(groups >= 1, f"judge.verifier.answer_regex={self.answer_regex!r} needs a capture group around the "
                                 "answer, e.g. 'Answer: (\\S+)'")
        require(self.timeout > 0 and self.memory_mb >= 64 and self.workers >= 1,
                "judge.verifier.timeout must be > 0, judge.verifier.memory_mb >= 64 and judge.verifier.workers >= 1")


@dataclass
class Config(JudgeConfig):
    verifier: VerifierSettings = opt(VerifierSettings(), "what is checked and the sandbox's limits")


def score(backend, candidates: list[Candidate], cfg, seed: int, *, system: str | None = None,
          desc: str = "verify") -> list[Judgment]:
    """The top of judge.scores when the candidate passes, else the lowest; NaN (never selected, counted as a parse
    failure) for rows with neither an answer nor tests."""
    hi, lo = max(cfg.scores), min(cfg.scores)
    return [Judgment.of(c, math.nan if ok is None else float(hi if ok else lo), raw=raw, parse_fail=int(ok is None))
            for c, (ok, raw) in zip(candidates, verdicts(candidates, cfg.verifier, desc))]


def judge_prompt(cfg, prompt: str) -> None:
    """The policy writes no judgment: nothing to fit in its context."""
    return None


def verdicts(candidates: list[Candidate], v: VerifierSettings,
             desc: str = "verify") -> list[tuple[bool | None, str | None]]:
    """(passed, raw) per candidate: True/False, or None without a reference; raw says why (answer match or test
    status)."""
    modes = [_mode(c, v.mode) for c in candidates]
    jobs = {}  # identical (code, tests) run once: K samples often repeat
    for c, mode in zip(candidates, modes):
        if mode == "code":
            jobs.setdefault(_job_key(c), {"code": extract_code(c.text), "tests": c.tests, "entry_point": c.entry_point})
    results = dict(zip(jobs, run_many(list(jobs.values()), v.workers, v.timeout, v.memory_mb, desc=desc)))
    out = []
    for c, mode in zip(candidates, modes):
        if mode == "code":
            r = results[_job_key(c)]
            last = r.output.strip().splitlines()[-1:] if not r.passed else []
            out.append((r.passed, ": ".join([r.status, *last])[:300]))
        elif mode == "answer":
            ok = is_correct(c.text, c.answer, v.answer_regex)
            out.append((ok, str(ok).lower()))
        else:
            out.append((None, None))
    return out


def _mode(c: Candidate, which: str) -> str | None:
    if which in ("auto", "code") and c.tests:
        return "code"
    if which in ("auto", "answer") and c.answer is not None:
        return "answer"
    return None


def _job_key(c: Candidate) -> tuple:
    return extract_code(c.text), c.tests, c.entry_point

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


def extract_answer(text: str, pattern: str | None = None) -> str | None:
    """The final answer of a response: a `\\boxed{}` value, else the last number.

    With `pattern` (a regex with one capture group), the group of its last match instead.
    """
    if pattern:
        found = [m.group(1) for m in re.finditer(pattern, text)]
        return normalise(found[-1]) if found and found[-1] is not None else None
    boxed = _BOXED.findall(text)
    if boxed:
        return normalise(boxed[-1])
    numbers = _NUMBER.findall(text)
    return normalise(numbers[-1]) if numbers else None


def normalise(answer: str) -> str:
    """Canonical text of an answer: trimmed, numbers without leading zeros or trailing '.0'."""
    answer = answer.strip().rstrip(".")
    try:
        value = float(answer)
    except ValueError:
        return answer
    return str(int(value)) if value == int(value) else str(value)


def is_correct(response: str, answer: str | None, pattern: str | None = None) -> bool | None:
    """True/False when the row has a reference answer, None otherwise (`pattern`: see extract_answer)."""
    if answer is None:
        return None
    got = extract_answer(response, pattern)
    return got is not None and got == normalise(str(answer))
