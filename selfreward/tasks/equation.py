"""Built-in task: solve `a*x+b=c` for a positive integer x.

Chosen because checking is genuinely easier than solving for a small model:
the solver must subtract and divide in its head, while the judge substitutes
the candidate back (one multiplication, one addition) and compares with c.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass

_PROMPT = re.compile(r"^(\d+)x\+(\d+)=(\d+)$")


@dataclass(frozen=True)
class EquationTask:
    max_a: int = 9
    max_x: int = 50
    max_b: int = 50

    def problem(self, rng: random.Random) -> dict:
        a = rng.randint(2, self.max_a)
        x = rng.randint(1, self.max_x)
        b = rng.randint(1, self.max_b)
        return {"prompt": f"{a}x+{b}={a * x + b}", "answer": str(x)}

    def response(self, x: int | str) -> str:
        return f"x={x}"


def held_out(prompt: str) -> bool:
    """The fixed eighth of the problem space reserved for evaluation (never trained on)."""
    return hashlib.sha1(prompt.encode()).digest()[0] % 8 == 0


def pool(task: EquationTask, n: int, seed: int, evaluation: bool) -> list[dict]:
    """n distinct problems from the held-out (evaluation) or the training part of the space."""
    rng = random.Random(seed)
    rows: dict[str, dict] = {}
    tries = 0
    while len(rows) < n:
        tries += 1
        if tries > 200 * n + 10000:
            raise ValueError(f"the task's problem space is too small for {n} distinct prompts")
        row = task.problem(rng)
        if held_out(row["prompt"]) == evaluation and row["prompt"] not in rows:
            row["id"] = f"{'eval' if evaluation else 'train'}-{len(rows):05d}"
            rows[row["prompt"]] = row
    return list(rows.values())


def check_text(prompt: str, response: str) -> tuple[str, int]:
    """The judge's correct worked check of a response, and its score (5 right, 1 wrong).

    Format: `a*x=p;p+b=c'|c` with c' and c zero-padded to three digits so the
    final compare is digit-aligned.
    """
    m = _PROMPT.match(prompt)
    if m is None:
        raise ValueError(f"not an equation prompt: {prompt!r}")
    a, b, c = (int(g) for g in m.groups())
    numbers = re.findall(r"\d+", response)
    x = int(numbers[-1][:4]) if numbers else 0
    p = a * x
    got = p + b
    return f"{a}*{x}={p};{p}+{b}={got:03d}|{c:03d}", (5 if got == c else 1)


def near_miss(x: int, rng: random.Random) -> int:
    """A plausible wrong answer: off by a little, a digit changed, or a slip of ten."""
    while True:
        kind = rng.random()
        if kind < 0.4:
            y = x + rng.choice([-2, -1, 1, 2])
        elif kind < 0.6:
            y = x + rng.choice([-10, 10])
        elif kind < 0.85:
            digits = list(str(x))
            i = rng.randrange(len(digits))
            digits[i] = str(rng.randint(0, 9))
            y = int("".join(digits))
        else:
            y = rng.randint(1, 60)
        if y != x and y >= 0:
            return y
