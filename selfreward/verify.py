"""Audit the verifier on your data: re-check a `candidates.jsonl` (or any JSONL of response/answer or code/tests rows)
and compare with the `correct` it stores.

    python -m selfreward.verify RUN/iter_001/candidates.jsonl      (or: selfreward verify FILE)
    python -m selfreward.verify rows.jsonl --answer-regex 'Answer: (\\S+)' --show 20

A row's response is its `text` (or `response`, `completion`); its reference is `answer`, or `tests` (+ `entry_point`,
`prefix`) for code, run in the sandbox. Prints the counts by verdict and the first rows where the verdict differs
from the stored `correct`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from selfreward.records import Candidate
from selfreward.scorers.sandbox import printable
from selfreward.scorers.verifier import VerifierSettings, verdicts


def candidate(row: dict, n: int) -> Candidate:
    text = next((row[k] for k in ("text", "response", "completion") if isinstance(row.get(k), str)), None)
    if text is None:
        raise ValueError(f"line {n}: no response (a 'text', 'response' or 'completion' string)")
    answer = row.get("answer")
    return Candidate(str(row.get("prompt_id", n)), row.get("prompt", ""), int(row.get("cand_idx", 0)), text, 0,
                     None if answer is None else str(answer), None, float("nan"), float("nan"), None,
                     tests=row.get("tests"), entry_point=row.get("entry_point"), prefix=row.get("prefix"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="selfreward verify", description=__doc__.split("\n\n")[0])
    ap.add_argument("file", help="a JSONL of candidates (candidates.jsonl, eval.jsonl) or response/answer rows")
    ap.add_argument("--answer-regex", default=None, help="judge.verifier.answer_regex: group 1 is the answer")
    ap.add_argument("--timeout", type=float, default=5.0, help="seconds per code-test run")
    ap.add_argument("--show", type=int, default=10, help="disagreements to print")
    args = ap.parse_args(argv)
    path = Path(args.file)
    rows, cands = [], []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            cands.append(candidate(row, n))
        except (json.JSONDecodeError, ValueError, TypeError) as e:
            sys.exit(f"{path}: {e if isinstance(e, ValueError) else f'line {n}: {e}'}")
        rows.append(row)
    settings = VerifierSettings(answer_regex=args.answer_regex, timeout=args.timeout)
    checked = verdicts(cands, settings, desc="verify")
    counts = Counter("no reference" if ok is None else "correct" if ok else "wrong" for ok, _ in checked)
    print(f"{path}: {len(rows)} rows; " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    stored = [(row, ok, raw) for row, (ok, raw) in zip(rows, checked) if "correct" in row]
    differ = [(row, ok, raw) for row, ok, raw in stored if row["correct"] != ok]
    print(f"stored verdicts: {len(stored)}; the verifier differs on {len(differ)}")
    for row, ok, raw in differ[: args.show]:
        text = next(row[k] for k in ("text", "response", "completion") if isinstance(row.get(k), str))
        # the row and the candidate's output are untrusted: escape sequences in them must not reach the terminal
        where = printable(f"{row.get('prompt_id', '?')}/{row.get('cand_idx', 0)}")
        print(f"  {where}: stored {printable(str(row['correct']))}, now {ok} ({printable(raw or '')}); "
              f"answer {printable(repr(row.get('answer')))}; response {printable(repr(text[-120:]))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
