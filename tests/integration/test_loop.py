"""The real loop, end to end, on the tiny experiment (a seconds-long seed and loop)."""

import json
import math

import pytest

from selfreward.data import DataError
from tests.conftest import ROOT, run_cli, run_loop


def read_jsonl(p):
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def test_tiny_loop_writes_every_artifact(tmp_path, cache_dir, capsys):
    run = tmp_path / "run"
    returned = run_loop(["+experiment=tiny", "iterations=2", "train.steps=8"], run)
    summary = json.loads((run / "summary.json").read_text())
    rows = summary["iterations"]
    assert [x["iteration"] for x in rows] == [0, 1, 2]
    for x in rows[1:]:
        assert x["judge/parse_fail_rate"] == 0.0
        assert "select/kept" in x and "time/iteration_s" in x and "eval/accuracy" in x
        for prefix in ("diversity/", "collapse/", "judge/saturation", "hacking/", "contamination/"):
            assert any(k.startswith(prefix) for k in x), prefix
    assert "eval/greedy_accuracy" in rows[0] and "judge/agreement" in rows[0]
    it = run / "iter_001"
    cands = read_jsonl(it / "candidates.jsonl")
    assert len(cands) == 16 * 4
    assert {"prompt_id", "prompt", "cand_idx", "text", "seed", "answer"} <= set(cands[0])
    judg = read_jsonl(it / "judgments.jsonl")
    assert len(judg) == len(cands)
    assert {"prompt_id", "cand_idx", "judge_prompt", "raw", "score"} <= set(judg[0])
    for s in read_jsonl(it / "selected.jsonl"):
        assert {"prompt", "completion", "score"} <= set(s)
    assert (it / "adapter" / "adapter_config.json").exists()
    assert (it / "metrics.json").exists() and (run / "plots" / "accuracy.png").exists()
    assert read_jsonl(run / "metrics.jsonl") == json.loads(json.dumps(returned).replace("NaN", "null"))
    assert "iter  eval acc" in capsys.readouterr().out  # the per-iteration table


def test_random_init_still_judges_with_finite_scores(tmp_path, cache_dir):
    run = tmp_path / "rand"
    run_loop(["+experiment=tiny", "model.init=random", "iterations=1"], run)
    judg = read_jsonl(run / "iter_001" / "judgments.jsonl")
    assert judg and all(j["score"] is not None and math.isfinite(j["score"]) for j in judg)


def test_controls_run(tmp_path, cache_dir):
    for strategy in ("random", "majority", "logprob"):
        run = tmp_path / strategy
        run_loop(["+experiment=tiny", f"selection.strategy={strategy}", "eval.judge=false"], run)
        sel = read_jsonl(run / "iter_001" / "selected.jsonl")
        assert sel, strategy


def test_bad_config_fails_before_compute(tmp_path, cache_dir):
    """The CLI's own handling: one line naming the problem and its fix, no traceback, nothing run."""
    r = run_cli(["+experiment=tiny", "selection.top_k=9"], tmp_path / "bad", cache_dir)
    assert r.returncode != 0
    assert "selection.top_k=9 exceeds sampling.k=4" in r.stderr
    r = run_cli(["+experiment=tiny", "data.train_prompts=/nonexistent.jsonl", "data.eval_prompts=/nonexistent.jsonl"],
                tmp_path / "bad2", cache_dir)
    assert r.returncode != 0 and "prompt file not found: /nonexistent.jsonl" in r.stderr
    assert "Traceback" not in r.stderr


def test_bad_prompt_rows_are_quarantined_and_good_rows_trained_on(tmp_path, cache_dir):
    train = tmp_path / "train.jsonl"
    good = [json.dumps({"id": f"g{i}", "prompt": f"{a}x+{b}={a * 3 + b}", "answer": 3}) for i, (a, b) in
            enumerate([(2, 1), (3, 4), (4, 2), (5, 5), (6, 1), (7, 3), (8, 2), (9, 9), (2, 7), (3, 3), (4, 8),
                       (5, 1), (6, 6), (7, 7), (8, 8), (9, 1), (2, 2), (3, 9), (4, 4), (5, 3)])]
    bad = [b'{"prompt": "oops', json.dumps({"text": "x"}).encode(), json.dumps({"prompt": " "}).encode(),
           json.dumps({"id": "g0", "prompt": "2x+2=8"}).encode(), b'{"prompt": "\xff\xfe"}',
           json.dumps({"prompt": "9" * 300}).encode()]
    train.write_bytes(b"\n".join([g.encode() for g in good] + bad) + b"\n")
    evals = tmp_path / "eval.jsonl"
    evals.write_text("".join(json.dumps({"prompt": f"{a}x+1={a * 5 + 1}", "answer": 5}) + "\n" for a in range(2, 8)))
    run = tmp_path / "run"
    run_loop(["+experiment=tiny", "data=prompts", f"data.train_prompts={train}", f"data.eval_prompts={evals}",
              "data.max_reject_fraction=0.5"], run)
    rejected = read_jsonl(run / "rejected.jsonl")
    reasons = {x["line"]: x["reason"] for x in rejected}
    assert len(rejected) == 6 and all(x["file"] == str(train) for x in rejected)
    assert reasons[21].startswith("malformed JSON") and reasons[22] == "no 'prompt' field"
    assert reasons[23] == "empty prompt" and reasons[24] == "duplicate id 'g0'"
    assert reasons[25].startswith("not UTF-8") and "exceeds the context" in reasons[26]
    trained_on = {s["prompt_id"] for s in read_jsonl(run / "iter_001" / "selected.jsonl")}
    assert trained_on and trained_on <= {f"g{i}" for i in range(20)}


def test_too_many_bad_rows_stop_before_compute(tmp_path, cache_dir):
    train = tmp_path / "train.jsonl"
    train.write_text('{"prompt": "2x+1=5"}\n{"broken\n{"also broken\n')
    with pytest.raises(DataError, match="line 2: malformed JSON") as e:
        run_loop(["+experiment=tiny", "data=prompts", f"data.train_prompts={train}", f"data.eval_prompts={train}"],
                 tmp_path / "run")
    assert str(train) in str(e.value) and not (tmp_path / "run" / "iter_000" / "eval.jsonl").exists()


def test_code_prompts_are_scored_in_the_sandbox(tmp_path, cache_dir):
    """examples/ code prompts through the real loop: every candidate's code runs against its tests (and fails: the
    equation seed cannot write code), the loop still selects, trains and evaluates."""
    ex = ROOT / "examples"
    run = tmp_path / "code"
    run_loop(["+experiment=tiny", "data=prompts", f"data.train_prompts={ex / 'code_train.jsonl'}",
              f"data.eval_prompts={ex / 'code_eval.jsonl'}", "judge=verifier", "judge.verifier.mode=code",
              "judge.verifier.timeout=2", "eval.kl=false"], run)
    judg = read_jsonl(run / "iter_001" / "judgments.jsonl")
    assert len(judg) == 6 * 4 and all(j["score"] in (1.0, 5.0) for j in judg)
    assert all(j["raw"].split(":")[0] in ("passed", "failed", "timeout") or j["raw"].startswith("crashed")
               for j in judg)
    assert read_jsonl(run / "iter_001" / "selected.jsonl")
    cands = read_jsonl(run / "iter_001" / "candidates.jsonl")
    assert all("tests" in c for c in cands)


def test_humaneval_through_the_loop_with_the_verifier(tmp_path, cache_dir):
    """data=humaneval on the tiny model: the path, not the score (a character model writes no Python)."""
    rows = run_loop(["+experiment=tiny", "data=humaneval", "judge=verifier", "iterations=1"], tmp_path / "he")
    assert rows[-1]["eval/accuracy"] == 0.0 and rows[-1]["judge/parse_fail_rate"] == 0.0  # measured, not missing
    judg = read_jsonl(tmp_path / "he" / "iter_001" / "judgments.jsonl")
    assert judg and all(j["score"] in (1.0, 5.0) for j in judg)
    cands = read_jsonl(tmp_path / "he" / "iter_001" / "candidates.jsonl")
    assert all(c["prefix"] == c["prompt"] and c["correct"] is False for c in cands)
