"""Preference sets the judge is measured on: every source format read to the same pairs, bad rows named by file and
line, the built-in task's pairs, and the accuracy figure (ties half, unscored pairs left out)."""

import json
import math

import pytest
from datasets import Dataset, DatasetDict

from selfreward.config import DataConfig
from selfreward.data import DataError
from selfreward.preferences import accuracy, read, task_pairs
from selfreward.records import Preference


def messages(prompt: str, response: str) -> list[dict]:
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]


ROWS = [  # UltraFeedback binarized's shape: a prompt, and each response as the whole conversation
    {"prompt": "3x+1=7", "chosen": messages("3x+1=7", "x=2"), "rejected": messages("3x+1=7", "x=3")},
    {"prompt": "2x+2=10", "chosen": messages("2x+2=10", "x=4"), "rejected": messages("2x+2=10", "x=5")},
]
EXPECTED = [Preference("prefs-1", "3x+1=7", "x=2", "x=3"), Preference("prefs-2", "2x+2=10", "x=4", "x=5")]


def test_a_jsonl_file_and_a_saved_dataset_give_the_same_pairs(tmp_path):
    path = tmp_path / "prefs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    good, bad = read(str(path))
    assert (good, bad) == (EXPECTED, [])
    DatasetDict({"test_prefs": Dataset.from_list(ROWS)}).save_to_disk(str(tmp_path / "ds"))
    good, bad = read(f"hf:{tmp_path / 'ds'}:test_prefs")
    assert bad == [] and [(p.prompt, p.chosen, p.rejected) for p in good] == \
        [(p.prompt, p.chosen, p.rejected) for p in EXPECTED]


def test_plain_strings_hh_transcripts_and_a_runs_pairs_file_are_read(tmp_path):
    path = tmp_path / "mixed.jsonl"
    rows = [
        {"prompt": "p", "chosen": "good", "rejected": "bad", "answer": 4},  # RewardBench's shape
        {"chosen": "\n\nHuman: hi?\n\nAssistant: hello", "rejected": "\n\nHuman: hi?\n\nAssistant: go away"},  # HH
        {"prompt": "q", "chosen": "a", "rejected": "b", "prompt_id": "t-1", "score_chosen": 5.0,
         "score_rejected": 1.0},  # pairs.jsonl: one prompt may give several pairs, so the line names the pair
        {"prompt": "q", "chosen": "a", "rejected": "c", "prompt_id": "t-1", "score_chosen": 5.0,
         "score_rejected": 2.0},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    good, bad = read(str(path))
    assert bad == []
    assert [(p.id, p.prompt, p.chosen, p.rejected, p.answer) for p in good] == [
        ("mixed-1", "p", "good", "bad", "4"), ("mixed-2", "Human: hi?", "hello", "go away", None),
        ("mixed-3", "q", "a", "b", None), ("mixed-4", "q", "a", "c", None)]


def test_bad_rows_are_named_by_file_line_and_reason(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n'
                    '{"prompt": "p", "chosen": "a"}\n'
                    'not json\n'
                    '{"chosen": "\\n\\nHuman: x\\n\\nAssistant: a", "rejected": "\\n\\nHuman: y\\n\\nAssistant: b"}\n'
                    '{"prompt": "p", "chosen": "", "rejected": "b"}\n'
                    + json.dumps({"prompt": "p", "chosen": "long " * 50, "rejected": "b"}) + "\n")
    good, bad = read(str(path), fits=lambda prompt, response: "too long" if len(response) > 100 else None)
    assert [p.id for p in good] == ["bad-1"]
    assert [(b["file"], b["line"]) for b in bad] == [(str(path), n) for n in (2, 3, 4, 5, 6)]
    reasons = [b["reason"] for b in bad]
    assert "'rejected'" in reasons[0] and "malformed" in reasons[1] and "different conversations" in reasons[2]
    assert "'chosen'" in reasons[3] and reasons[4] == "too long"
    with pytest.raises(DataError, match="not found"):
        read(str(tmp_path / "missing.jsonl"))
    with pytest.raises(DataError, match="could not be loaded"):
        read(f"hf:{tmp_path / 'nowhere'}:test")


def test_the_builtin_tasks_pairs_hold_the_reference_against_a_near_miss():
    pairs = task_pairs(DataConfig(task="equation"), 40)
    assert len(pairs) == 40 and len({p.prompt for p in pairs}) == 40
    for p in pairs:
        a, rest = p.prompt.split("x+")
        b, c = rest.split("=")
        x = lambda text: int(text.removeprefix("x="))  # noqa: E731
        assert int(a) * x(p.chosen) + int(b) == int(c) != int(a) * x(p.rejected) + int(b)
    with pytest.raises(DataError, match="no built-in preference pairs"):
        task_pairs(DataConfig(task="humaneval"), 4)
    sequence = task_pairs(DataConfig(task="sequence"), 10_000)  # as many as the held-out part holds
    assert 0 < len(sequence) < 300 and all(p.chosen == f" {p.answer}" != p.rejected for p in sequence)


def test_accuracy_counts_ties_half_and_leaves_unscored_pairs_out():
    out = accuracy([(5.0, 1.0), (3.0, 3.0000000001), (1.0, 4.0), (math.nan, 2.0)])
    assert out == {"judge/pref_accuracy": 0.5, "judge/pref_ties": 1 / 3, "judge/pref_pairs": 3,
                   "judge/pref_unscored": 1}
    nothing = accuracy([(math.nan, 1.0)])
    assert math.isnan(nothing["judge/pref_accuracy"]) and nothing["judge/pref_pairs"] == 0


def test_a_pairwise_judge_on_pairs_ties_exactly_where_its_two_orders_disagree(tiny_model):
    """Random weights: verdicts are arbitrary, but each pair is won by one side or tied by a disagreement."""
    import torch
    from transformers import AutoModelForCausalLM

    from selfreward.backends.hf import HFBackend
    from selfreward.preferences import measure
    from tests.conftest import compose_config

    model, tok = tiny_model
    torch.manual_seed(2)
    backend = HFBackend(AutoModelForCausalLM.from_config(model.config).eval(), tok, progress=False)
    pairs = task_pairs(DataConfig(task="equation"), 12)
    cfg = compose_config(["judge=pairwise", "judge.pairwise.score_prefix=:", "judge.pairwise.max_new_tokens=4"])
    judgments, out = measure(backend, pairs, cfg, seed=0)
    assert len(judgments) == 24 and out["judge/pref_pairs"] == 12
    assert out["judge/pref_ties"] == pytest.approx(1 - out["judge/pref_order_agreement"])
    assert {j.score for j in judgments} <= {1.0, 5.0}


def test_load_caps_writes_what_it_used_and_stops_on_too_many_bad_rows(tmp_path):
    from selfreward.preferences import load
    from tests.conftest import compose_config

    path = tmp_path / "prefs.jsonl"
    rows = [{"prompt": f"p{i}", "chosen": "a", "rejected": "b"} for i in range(6)] + [{"prompt": "p"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = compose_config([f"eval.preferences={path}", "eval.preferences_n=4"])
    pairs = load(cfg, tmp_path)
    assert [p.prompt for p in pairs] == ["p0", "p1", "p2", "p3"]
    assert len((tmp_path / "preferences.jsonl").read_text().splitlines()) == 4
    assert json.loads((tmp_path / "rejected_preferences.jsonl").read_text())["line"] == 7
    path.write_text("".join(json.dumps(r) + "\n" for r in rows[:1] + rows[-1:] * 3))
    with pytest.raises(DataError, match=r"eval.preferences=.*3 of 4 rows rejected .*line 2: no 'chosen' or 'rejected'"):
        load(cfg, tmp_path)
    assert load(compose_config(["data=prompts", "data.train_prompts=a", "data.eval_prompts=b"]), tmp_path) == []
