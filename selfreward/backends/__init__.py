"""Generation engines behind one small Protocol: transformers (hf.py) and vLLM (vllm.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from selfreward.records import Completion


@dataclass
class JudgeOutput:
    """One constrained judge decoding: the text and the score it ends with."""

    raw: str
    expected: float  # probability-weighted score token; NaN when the output did not parse
    sampled: float  # the score token actually decoded; NaN when the output did not parse
    unconstrained: int = 0  # decodings of this judgment that ran without the grammar (vLLM: a failed compile)


class Backend(Protocol):
    tokenizer: object  # a Hugging Face tokenizer: stages format prompts with its chat template
    device: object  # where models that score beside the policy (a reward model) should run

    def generate(
        self, prompts: list[str], n: int, temperature: float, top_p: float, top_k: int, max_new_tokens: int, seed: int,
        batch_size: int = 512, desc: str = "sample", stop=(),
    ) -> list[list[Completion]]:
        """n completions per already-formatted prompt (temperature 0 = greedy), with their log-probs and seeds. A
        backend may end rows at `stop` strings and return them cut (with figures over the kept tokens); a text that
        still holds a stop string is cut by the caller, its figures taken teacher-forced."""

    def judge(
        self, prompts: list[str], regex: str, scores: list[int], temperature: float, max_new_tokens: int, seed: int,
        batch_size: int = 512, desc: str = "judge",
    ) -> list[JudgeOutput]:
        """One constrained judgment per formatted judge prompt."""

    def score_next(
        self, prompts: list[str], scores: list[int], temperature: float, seed: int, batch_size: int = 512,
        desc: str = "judge",
    ) -> list[JudgeOutput]:
        """A score-only judgment: the next token after each prompt (which ends with the score prefix), restricted to
        the score tokens, from one forward pass."""

    def logprob(
        self, prompts: list[str], completions: list[str], batch_size: int = 256, desc: str = "logprob"
    ) -> list[tuple[float, float]]:
        """(mean token log-prob, mean token entropy) of each completion under the policy, teacher-forced."""

    def update(self, policy, adapter_dir: Path | None, iteration: int = 0) -> None:
        """After training: generate with the new policy (transformers) or serve its saved adapter (vLLM)."""

    def pause(self) -> None:
        """Before training: give the accelerator's memory to the trainer where the engine can sleep."""
