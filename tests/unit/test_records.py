"""The rows stages exchange: typed records, their JSONL lines (columns kept), NaN <-> null, and seed derivation."""

import json
import math

from selfreward.records import Candidate, EvalSample, Judgment, Pair, Prompt, Selection, by_prompt
from selfreward.rng import derive, repeat
from selfreward.rundir.artifacts import read_jsonl, write_jsonl


def test_records_round_trip_through_jsonl_with_their_columns(tmp_path):
    rows = {
        Prompt: [Prompt("p1", "2x+1=5", answer="2"), Prompt("c1", "write f", tests="assert f()", entry_point="f")],
        Candidate: [Candidate("p1", "2x+1=5", 0, "x=2", 7, "2", "2", -0.5, 0.3, True),
                    Candidate("c1", "write f", 1, "def f(): 1", 7, None, "1", math.nan, 0.1, None, tests="assert f()")],
        Judgment: [Judgment("p1", 0, "check 2x+1=5 x=2", "2*2=4;4+1=005|005:5", 4.99),
                   Judgment("p1", 1, None, [[0, 1.0, 2.0]], math.nan, 1, comparisons=1, disagree=1)],
        Selection: [Selection("2x+1=5", "x=2", "p1", 0, 4.99, True)],
        Pair: [Pair("2x+1=5", "x=2", "x=3", "p1", 5.0, 1.0)],
        EvalSample: [EvalSample("e1", "3x+1=7", 0, "x=2", "2", "2", True, "x=2", True, score=4.5)],
    }
    for record, items in rows.items():
        path = tmp_path / f"{record.__name__}.jsonl"
        write_jsonl(path, items)
        back = read_jsonl(path, record)
        assert len(back) == len(items) and all(isinstance(r, record) for r in back)
        for a, b in zip(back, items):  # NaN compares unequal: check it came back as NaN, not None
            for k, v in b.to_row().items():
                got = a.to_row()[k]
                assert (math.isnan(got) if isinstance(v, float) and math.isnan(v) else got == v), (record, k)
    lines = [json.loads(x) for x in (tmp_path / "Judgment.jsonl").read_text().splitlines()]
    assert lines[0] == {"prompt_id": "p1", "cand_idx": 0, "judge_prompt": "check 2x+1=5 x=2",
                        "raw": "2*2=4;4+1=005|005:5", "score": 4.99, "parse_fail": 0}  # no pairwise columns
    assert lines[1]["score"] is None and lines[1]["comparisons"] == 1  # JSON has no NaN: null
    assert set(json.loads((tmp_path / "Pair.jsonl").read_text())) == {
        "prompt", "chosen", "rejected", "prompt_id", "score_chosen", "score_rejected"}  # TRL's preference row
    assert "tests" not in json.loads((tmp_path / "Candidate.jsonl").read_text().splitlines()[0])


def test_by_prompt_keeps_first_seen_order():
    rows = [Candidate(p, "x", i, "t", 0, None, None, 0.0, 0.0, None) for p, i in [("b", 0), ("a", 0), ("b", 1)]]
    groups = by_prompt(rows)
    assert list(groups) == ["b", "a"] and [c.cand_idx for c in groups["b"]] == [0, 1]


def test_seeds_derive_from_the_global_seed_and_where_they_are_drawn():
    assert derive(0, 0, 2, 3) == 2 * 10_007 + 3 * 101  # sampling/judging shard 3 of iteration 2
    assert derive(0, 2) == 2 and derive(0, 1) == 1  # training of iteration 2; sampled evaluation
    assert derive(1, 0, 2, 3) != derive(0, 0, 2, 3) != derive(0, 0, 2, 4)
    assert repeat(5, 0) == 5 and repeat(5, 1) == 5 + 7_919
    assert 0 <= derive(2**40, 9, 9, 9, 9) < 2**31
