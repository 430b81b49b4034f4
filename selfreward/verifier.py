"""Ground-truth checks: final-answer extraction and match (the verifier only measures)."""

from __future__ import annotations

import re

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
