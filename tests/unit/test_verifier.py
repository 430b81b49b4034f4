"""The answer verifier (math-verify), GSM8K references, HumanEval through the loop's code path, the audit CLI."""

import json
import time

import pytest

from selfreward.scorers.verifier import extract_answer, is_correct, reference
from tests.conftest import cand, compose_config

CASES = [  # (response, reference, verdict)
    ("The total is $1,250.", "1250", True),  # thousands separator
    ("so the price is 1,250 dollars", "1,250", True),
    ("\\boxed{\\frac{1}{2}}", "0.5", True),  # nested braces in \boxed{}, fraction vs decimal
    ("\\boxed{0.5}", "\\frac{1}{2}", True),
    ("\\boxed{2\\sqrt{2}}", "\\sqrt{8}", True),  # radicals
    ("x = -3", "-3", True),  # negative numbers
    ("\\boxed{(1, 2)}", "(1,2)", True),  # tuples / open intervals
    ("\\boxed{[0, 1)}", "[0,1)", True),
    ("She sold 72 clips.", "Natalia sold 48/2 = 24 clips in May.\n#### 72", True),  # GSM8K worked solution
    ("She sold 12 clips.", "Natalia sold 48/2 = 24 clips in May.\n#### 72", False),
    ("32", "2", False),  # shares its last digit with the reference
    ("x=49", "49", True),  # the built-in task
    ("x=48", "49", False),
    ("yes", "yes", True),  # not mathematics: compared as text
]


@pytest.mark.parametrize("response, ref, verdict", CASES)
def test_answers_are_checked_as_mathematics(response, ref, verdict):
    assert is_correct(response, ref) is verdict


def test_references_and_extraction():
    assert reference("48/2 = 24\n#### 1,072") == "1072" and reference(" 7 ") == "7"
    assert extract_answer("so \\boxed{\\frac{1}{2}}.") == "\\frac{1}{2}" and extract_answer("$1,250") == "1250"
    assert is_correct("anything", None) is None
    assert is_correct("Answer: 7 (checked 3 times)", "7", r"Answer:\s*(\S+)") is True  # a task's own format


def test_a_slow_answer_times_out_scores_wrong_and_the_run_goes_on():
    t = time.time()
    assert is_correct("\\boxed{9^{9^{9^{9^{9}}}}}", "3") is False
    assert time.time() - t < 30
    assert is_correct("\\boxed{3}", "3") is True  # and the next answer is checked as usual


def test_every_humaneval_solution_passes_and_every_stub_fails():
    """The 164 tasks through the loop's own path (data=humaneval, judge=verifier): prompt + completion, then the
    task's check(entry_point) in the sandbox."""
    from selfreward import data, scorers
    from selfreward.tasks.humaneval import problems

    cfg = compose_config(["data=humaneval", "judge=verifier"])
    train, evals = data.builtin(cfg.data)
    assert len(train) == 123 and len(evals) == 41 and not {p.id for p in train} & {p.id for p in evals}
    solutions = {p["task_id"]: p["canonical_solution"] for p in problems()}
    rows = [cand(p.id, k, solutions[p.id] if k == 0 else "    return None\n", prompt=p.prompt, tests=p.tests,
                 entry_point=p.entry_point, prefix=p.prefix) for p in train + evals for k in (0, 1)]
    judged = scorers.score(None, rows, cfg.judge, seed=0)
    passed = {(j.prompt_id, j.cand_idx): j.score == 5.0 for j in judged}
    assert sum(passed[p.id, 0] for p in train + evals) == 164, [j.raw for j in judged if j.score != 5.0][:3]
    assert not any(passed[p.id, 1] for p in train + evals)


@pytest.mark.parametrize("task, completion", [
    ("HumanEval/32", "    return 0.0\n\n\ndef poly(xs, x):\n    return 0.0\n"),  # check: poly(xs, find_zero(xs))
    ("HumanEval/38", "    return s\n\n\ndef encode_cyclic(s):\n    return s\n"),  # check: f(encode_cyclic(s)) == s
    ("HumanEval/50", "    return s\n\n\ndef encode_shift(s):\n    return s\n"),
])
def test_a_completion_cannot_redefine_the_prompts_helpers(task, completion):
    """Through the loop's path: the check calls the prompt's helper, so a wrong answer that redefines it fails."""
    from selfreward import scorers
    from selfreward.tasks.humaneval import problems

    cfg = compose_config(["data=humaneval", "judge=verifier"])
    p = next(p for p in problems() if p["task_id"] == task)
    rows = [cand(task, k, text, prompt=p["prompt"], tests=p["test"], entry_point=p["entry_point"], prefix=p["prompt"])
            for k, text in enumerate([p["canonical_solution"], completion])]
    assert [j.score for j in scorers.score(None, rows, cfg.judge, seed=0)] == [5.0, 1.0]


def test_gsm8k_rows_with_their_own_columns(tmp_path, cache_dir):
    """GSM8K-shaped rows (question, a worked answer ending '#### N') through data=prompts with the column names, in a
    prompt file and in a dataset saved with `datasets`: `correct` is math-verify on the reduced reference."""
    from datasets import Dataset, DatasetDict

    from selfreward.data import read_prompts
    from selfreward.rundir.artifacts import read_jsonl
    from tests.conftest import run_loop

    rows = [{"question": f"{a}x+{b}={a * x + b}", "answer": f"a x is {a}x, so x = {x}.\n#### {x}"}
            for a, b, x in [(2, 1, 3), (3, 4, 5), (4, 2, 7), (5, 5, 9), (6, 1, 2), (7, 3, 4)]]
    path = tmp_path / "gsm.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    DatasetDict({"train": Dataset.from_list(rows[:4]), "test": Dataset.from_list(rows[4:])}).save_to_disk(
        str(tmp_path / "gsm"))
    good, bad = read_prompts(f"hf:{tmp_path / 'gsm'}:train", prompt_field="question")
    assert not bad and [p.prompt for p in good] == [r["question"] for r in rows[:4]]
    # as GSM8K is named on the Hub (its config, `main`, where the split goes): each role takes its own split
    held_out, _ = read_prompts(f"hf:{tmp_path / 'gsm'}:main", prompt_field="question", role="test")
    assert [p.prompt for p in held_out] == [r["question"] for r in rows[4:]] and held_out[0].answer.endswith("#### 2")
    run_loop(["+experiment=tiny", "data=prompts", f"data.train_prompts={path}", f"data.eval_prompts={path}",
              "data.prompt_field=question", "data.on_contamination=report", "eval.kl=false"], tmp_path / "run")
    cands = read_jsonl(tmp_path / "run" / "iter_001" / "candidates.jsonl")
    assert cands and all("####" in c["answer"] for c in cands)
    assert all(c["correct"] == is_correct(c["text"], reference(c["answer"])) for c in cands)


def test_verify_cli_recounts_and_reports_disagreements(tmp_path, capsys):
    from selfreward.verify import main

    rows = [{"prompt_id": "a", "text": "x=2", "answer": "2", "correct": True},
            {"prompt_id": "b", "text": "\\boxed{\\frac{1}{2}}", "answer": "0.5", "correct": False},  # an old verdict
            {"prompt_id": "c", "response": "hello"}]
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main([str(path)]) == 0
    out = capsys.readouterr().out
    assert "3 rows; correct 2, no reference 1" in out and "differs on 1" in out and "b/0: stored False, now True" in out


def test_verify_cli_prints_untrusted_text_escaped(tmp_path, capsys):
    """A candidate's exception message (screen clear, a clipboard write) and a row's own fields reach the terminal
    as escapes, never as control characters; the file keeps them as data."""
    from selfreward.verify import main

    attack = "\x1b[2J\x1b]52;c;cHduZWQ=\x07"
    rows = [{"prompt_id": f"p{attack}", "text": f"def f():\n    raise ValueError({attack!r})\n",
             "tests": "f()", "correct": True}]
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main([str(path)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "ValueError: \\x1b[2J\\x1b]52;c;cHduZWQ=\\x07" in out, out
    assert json.loads(path.read_text())["prompt_id"] == f"p{attack}"
