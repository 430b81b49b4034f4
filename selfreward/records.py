"""What the stages exchange: one small dataclass per kind of row, with `to_row()` / `from_row()` for its JSONL line.

    Prompt ──sample──▶ Completion ──+prompt, verdict──▶ Candidate ──score──▶ Judgment ──select──▶ Selection, Pair

The JSONL columns are the contract other tools read (TRL's prompt/completion and prompt/chosen/rejected rows), so
`to_row()` keeps them as they were; JSON's null for a missing float (NaN) is restored by `rundir.artifacts`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


class Record:
    """to_row / from_row for a dataclass: optional fields left at None are left out of the row."""

    OPTIONAL: tuple[str, ...] = ()  # fields written only when set

    def to_row(self) -> dict[str, Any]:
        row = dataclasses.asdict(self)
        return {k: v for k, v in row.items() if not (k in self.OPTIONAL and v is None)}

    @classmethod
    def from_row(cls, row: dict[str, Any]):
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in row.items() if k in names})


@dataclass
class Prompt(Record):
    """A training or held-out prompt; `answer` / `tests` + `entry_point` let the verifier check its responses;
    `prefix` is code a response continues (HumanEval: the verifier runs prefix + response)."""

    id: str
    prompt: str
    answer: str | None = None
    tests: str | None = None
    entry_point: str | None = None
    prefix: str | None = None
    OPTIONAL = ("answer", "tests", "entry_point", "prefix")


@dataclass
class Completion:
    """One generated response, as a backend returns it: text, mean token log-prob and entropy (nats) at temperature 1,
    and the torch/engine seed it was sampled under."""

    text: str
    logprob: float = float("nan")
    entropy: float = float("nan")
    seed: int = 0


@dataclass
class Candidate(Record):
    """A sampled response to a prompt (`candidates.jsonl`). `correct` is the verifier's verdict where the prompt has
    a reference: recorded to measure the judge, never read by selection."""

    prompt_id: str
    prompt: str
    cand_idx: int
    text: str
    seed: int
    answer: str | None
    final: str | None
    logprob: float
    entropy: float
    correct: bool | None
    tests: str | None = None
    entry_point: str | None = None
    prefix: str | None = None
    OPTIONAL = ("tests", "entry_point", "prefix")

    @property
    def key(self) -> tuple[str, int]:
        return self.prompt_id, self.cand_idx


@dataclass
class EvalSample(Record):
    """A held-out sample (`eval.jsonl`): the sampled response, the prompt's greedy response, their verdicts and the
    judge's score of the sampled one (NaN where not judged)."""

    prompt_id: str
    prompt: str
    cand_idx: int
    text: str
    answer: str | None
    final: str | None
    correct: bool | None
    greedy: str
    greedy_correct: bool | None
    tests: str | None = None
    entry_point: str | None = None
    score: float | None = None
    prefix: str | None = None
    OPTIONAL = ("tests", "entry_point", "score", "prefix")

    @property
    def key(self) -> tuple[str, int]:
        return self.prompt_id, self.cand_idx


@dataclass
class Judgment(Record):
    """A scorer's verdict on one candidate (`judgments.jsonl`). `score` is NaN when it could not score (never
    selected); its units are the scorer's. `raw` is what the scorer said (text, or per-part scores);
    pairwise judgments add how many comparisons were played and how many disagreed between the two orders; a
    judgment some of whose decodings ran without the judge's grammar says how many did."""

    prompt_id: str
    cand_idx: int
    judge_prompt: str | None
    raw: Any
    score: float
    parse_fail: int = 0
    comparisons: int | None = None
    disagree: int | None = None
    unconstrained: int | None = None  # decodings that ran without the judge's grammar (vLLM, a failed compile)
    OPTIONAL = ("comparisons", "disagree", "unconstrained")

    @classmethod
    def of(cls, c: Candidate, score: float, raw: Any = None, judge_prompt: str | None = None, parse_fail: int = 0,
           **extra) -> Judgment:
        return cls(c.prompt_id, c.cand_idx, judge_prompt, raw, score, parse_fail, **extra)

    @property
    def key(self) -> tuple[str, int]:
        return self.prompt_id, self.cand_idx


@dataclass
class Selection(Record):
    """A kept winner (`selected.jsonl`): TRL's prompt/completion row plus where it came from."""

    prompt: str
    completion: str
    prompt_id: str
    cand_idx: int
    score: float
    correct: bool | None


@dataclass
class Pair(Record):
    """A preference pair (`pairs.jsonl`): TRL's prompt/chosen/rejected row; the extra keys are ignored by TRL."""

    prompt: str
    chosen: str
    rejected: str
    prompt_id: str
    score_chosen: float
    score_rejected: float


@dataclass
class Preference(Record):
    """A labelled preference pair the judge is measured on (`eval.preferences`, RUN/preferences.jsonl): the
    chosen response should score above the rejected one; `answer` where the source gives one."""

    id: str
    prompt: str
    chosen: str
    rejected: str
    answer: str | None = None
    OPTIONAL = ("answer",)


@dataclass(frozen=True)
class PromptFormat:
    """How the policy's prompts are written, alike in every stage that renders one (sampling, judging, training,
    evaluation, M0, the context check): the system prompt, and the few-shot text put around a task prompt (a judge
    prompt takes the system prompt only: `judge`). Built from the `sampling` group once (`PromptFormat.of`), so no
    other stage reads `sampling.*` to format a prompt."""

    system: str | None = None
    few_shot: str | None = None

    @classmethod
    def of(cls, sampling) -> PromptFormat:
        return cls(sampling.system_prompt, sampling.few_shot)

    @property
    def judge(self) -> PromptFormat:
        return PromptFormat(self.system)


@dataclass
class ReplayRow(Record):
    """A row mixed into every training batch (`train.replay_fraction`) so that what M0 learnt is not eroded: a
    prompt (as the user turn) and its completion, the completion's last token weighted `last_weight`. The built-in
    model's replay rows are its judge data (the rubric prompt, then the worked check and the score)."""

    prompt: str
    completion: str
    last_weight: float = 1.0


def by_prompt(rows: list) -> dict[str, list]:
    """Rows grouped by `prompt_id`, groups in first-seen order, rows in their order."""
    groups: dict[str, list] = {}
    for r in rows:
        groups.setdefault(r.prompt_id, []).append(r)
    return groups
