"""Built-in task `sequence`: the next term of an arithmetic sequence (`9, 14, 19, 24,` -> `29`).

In the reach of a small pretrained base model (Gemma 3 270M few-shot, the default knobs: 0.56 greedy, 0.30
sampled, 44% of prompts with both right and wrong samples among K=4, docs/gemma.md), and
a skill rather than a fact: find the step, add it, so what training teaches on one prompt transfers to held-out
ones. Arithmetic in a 270M model's head (`a+b`, `ax+b=c`) is out of its reach (the real-model issue measured 0-17%).

The problem space is split by a hash of the prompt text, so the split holds whatever the pool sizes and seeds:
a fixed eighth is held out for evaluation, another eighth is the seed split that M0 is built on (`model.bootstrap`),
and the rest is the loop's training space.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

EVAL, SEED, TRAIN = "eval", "seed", "train"


@dataclass(frozen=True)
class SequenceTask:
    min_terms: int = 4
    max_terms: int = 4
    min_start: int = 1
    max_start: int = 20
    min_step: int = 2
    max_step: int = 9

    def __post_init__(self):
        if not (2 <= self.min_terms <= self.max_terms and 0 <= self.min_start <= self.max_start
                and 1 <= self.min_step <= self.max_step):
            raise ValueError(f"sequence task needs 2 <= min_terms <= max_terms, 0 <= min_start <= max_start and "
                             f"1 <= min_step <= max_step, got {self}")

    def space(self) -> list[dict]:
        """Every problem: (terms shown, start, step) -> the shown terms and the next one."""
        return [problem(start, step, terms) for terms in range(self.min_terms, self.max_terms + 1)
                for start in range(self.min_start, self.max_start + 1)
                for step in range(self.min_step, self.max_step + 1)]


def problem(start: int, step: int, terms: int) -> dict:
    shown = ", ".join(str(start + i * step) for i in range(terms))
    return {"prompt": shown + ",", "answer": str(start + terms * step)}


def part(prompt: str) -> str:
    """Which part of the problem space a prompt belongs to, by a hash of its text: eval, seed or train."""
    b = hashlib.sha1(prompt.encode()).digest()[0] % 8
    return EVAL if b == 0 else SEED if b == 1 else TRAIN


def pool(task: SequenceTask, n: int, seed: int, which: str) -> list[dict]:
    """Up to n distinct problems of one part of the space (`which`), in a seeded order. Asking for more than the part
    holds is an error that says how large it is."""
    everything = task.space()
    space = [row for row in everything if part(row["prompt"]) == which]
    if n > len(space):
        raise ValueError(f"data.task=sequence: the {which} part of the problem space holds {len(space)} prompts "
                         f"(of {len(everything)}), {n} asked for; widen data.sequence_* (terms, start or step range)")
    random.Random(seed).shuffle(space)
    return [{**row, "id": f"{which}-{i:05d}"} for i, row in enumerate(space[:n])]
