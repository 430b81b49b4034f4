"""The verifier (`judge=verifier`): programs score each candidate, an answer match or the candidate's code run
against the row's tests in the sandbox. The same answer check labels every candidate `correct` (to measure the
judge: in the loop the verifier only measures, unless it is the chosen scorer)."""

from __future__ import annotations

import math
import re
import threading
from dataclasses import dataclass, replace
from functools import lru_cache

from omegaconf import OmegaConf

from selfreward.records import Candidate, Judgment, PromptFormat
from selfreward.schema import ConfigError, JudgeConfig, choices, opt, require
from selfreward.scorers.sandbox import SANDBOXES, extract_code, run_many

uses_policy = False


Mode = choices("Mode", "auto", "answer", "code", module=__name__)
Sandbox = choices("Sandbox", *SANDBOXES, module=__name__)


@dataclass
class VerifierSettings:
    mode: Mode = opt(Mode.auto, "auto: rows with `tests` run code, rows with `answer` match it; answer or code: only "
                                "that")
    answer_regex: str | None = opt(None, "regex whose group 1 is the final answer, compared as text (None: "
                                         "math-verify parses and compares the answer)")
    timeout: float = opt(5.0, "wall-clock seconds per code-test run (then it fails)")
    memory_mb: int = opt(1024, "address-space limit of a code-test run in MiB")
    workers: int = opt(2, "code-test runs in parallel")
    sandbox: Sandbox = opt(Sandbox.auto, "auto or bwrap: each code-test run in bubblewrap namespaces with seccomp "
                                         "(stops if they are unavailable); hooks: audit hooks only, not an OS boundary")

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


def score(backend, candidates: list[Candidate], cfg, seed: int, *, fmt: PromptFormat | None = None,
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
    limits = (v.timeout, v.memory_mb, str(v.sandbox))
    if len(_RUNS) > 100_000:
        _RUNS.clear()
    jobs = {}  # identical (code, tests) run once: K samples often repeat, and labelling ran them already
    for c, mode in zip(candidates, modes):
        if mode == "code" and (_job_key(c), limits) not in _RUNS:
            jobs.setdefault(_job_key(c), {"code": program(c), "tests": c.tests, "entry_point": c.entry_point,
                                          "prefix": c.prefix})  # the prompt's helpers stay the prompt's
    results = run_many(list(jobs.values()), v.workers, v.timeout, v.memory_mb, desc=desc, sandbox=str(v.sandbox))
    for key, result in zip(jobs, results):
        _RUNS[key, limits] = result
    out = []
    for c, mode in zip(candidates, modes):
        if mode == "code":
            r = _RUNS[_job_key(c), limits]
            last = r.output.strip().splitlines()[-1:] if not r.passed else []
            out.append((r.passed, ": ".join([r.status, *last])[:300]))
        elif mode == "answer":
            ok = is_correct(c.text, c.answer, v.answer_regex)
            out.append((ok, str(ok).lower()))
        else:
            out.append((None, None))
    return out


def settings_of(judge_cfg) -> VerifierSettings:
    """The run's verifier settings: the judge's own where it has a verifier section, else the defaults."""
    v = getattr(judge_cfg, "verifier", None)
    return VerifierSettings() if v is None else OmegaConf.to_object(v) if OmegaConf.is_config(v) else v


def label(rows: list, v: VerifierSettings) -> list[bool | None]:
    """What `correct` records for each sampled row, in any mode: answers (math-verify, or `answer_regex`), code by
    its tests. It measures the judge; no selection strategy reads it."""
    return [ok for ok, _ in verdicts(rows, replace(v, mode=Mode.auto), desc="verify")]


_RUNS: dict = {}  # ((code, tests, entry point, prefix), (timeout, memory, sandbox)) -> its result, within a run


def _mode(c: Candidate, which: str) -> str | None:
    if which in ("auto", "code") and c.tests:
        return "code"
    if which in ("auto", "answer") and c.answer is not None:
        return "answer"
    return None


def program(c: Candidate) -> str:
    """The code a candidate stands for: the prompt's code prefix + the response (a continuation, as HumanEval
    assembles it), else the response's first fenced block or the whole response."""
    return c.prefix + c.text if c.prefix else extract_code(c.text)


def _job_key(c: Candidate) -> tuple:
    return program(c), c.tests, c.entry_point, c.prefix


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
MAX_ANSWER_CHARS = 2000  # longer texts are cut to their end before math-verify parses them


def extract_answer(text: str, pattern: str | None = None) -> str | None:
    """The final answer of a response, as recorded in `final` (majority voting reads it): the last `\\boxed{}`
    value (nested braces allowed), else the last number; with `pattern` (a regex with one capture group), the group
    of its last match instead."""
    if pattern:
        found = [m.group(1) for m in re.finditer(pattern, text)]
        return normalise(found[-1]) if found and found[-1] is not None else None
    if (boxed := last_boxed(text)) is not None:
        return normalise(boxed)
    numbers = _NUMBER.findall(text.replace(",", ""))
    return normalise(numbers[-1]) if numbers else None


def last_boxed(text: str) -> str | None:
    """The content of the last `\\boxed{...}`, braces balanced (`\\boxed{\\frac{1}{2}}` -> `\\frac{1}{2}`)."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 0, start + len("\\boxed")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1 : j]
    return None


def normalise(answer: str) -> str:
    """Canonical text of an answer: trimmed, numbers without leading zeros or trailing '.0'."""
    answer = answer.strip().rstrip(".")
    try:
        value = float(answer)
    except ValueError:
        return answer
    return str(int(value)) if value == int(value) else str(value)


def reference(answer: str) -> str:
    """The reference to compare with: a GSM8K worked solution is reduced to what follows its last `####`."""
    return answer.rsplit("####", 1)[1].strip().replace(",", "") if "####" in answer else answer.strip()


def is_correct(response: str, answer: str | None, pattern: str | None = None) -> bool | None:
    """True/False when the row has a reference answer, None otherwise.

    By default math-verify decides (LaTeX and plain answers parsed into sympy: `$1,250` = 1250, `\\frac{1}{2}` = 0.5,
    `\\sqrt{8}` = `2\\sqrt{2}`, intervals, tuples); with `pattern` (`judge.verifier.answer_regex`), the regex's last
    match compared as normalised text, for tasks with their own answer format.
    """
    if answer is None:
        return None
    if pattern:
        got = extract_answer(response, pattern)
        return got is not None and got == normalise(reference(str(answer)))
    return _math_verify(response[-MAX_ANSWER_CHARS:], reference(str(answer)))


@lru_cache(maxsize=65536)  # K samples often repeat one another, and references repeat across a run
def _math_verify(response: str, gold: str) -> bool:
    """math-verify's verdict. Its timeouts use SIGALRM, which works only in the main thread: elsewhere they are off
    and the inputs' length bound above keeps parsing short; a parse that times out scores wrong."""
    from math_verify import parse, verify  # imports sympy (seconds): only when an answer is checked

    limit = 5 if threading.current_thread() is threading.main_thread() else None
    try:  # a bare reference (`\\sqrt{8}`, `(1,2)`, `[0,1)`) parses as LaTeX only inside math delimiters
        target = ("$" not in gold and parse(f"${gold}$", parsing_timeout=limit)) or parse(gold, parsing_timeout=limit)
        if target and verify(target, parse(response, parsing_timeout=limit), timeout_seconds=limit):
            return True
    except Exception:  # math-verify logs and returns False on its own errors; anything else also scores wrong
        pass
    return normalise(response) == normalise(gold)  # answers that are not mathematics ("yes", a name)
