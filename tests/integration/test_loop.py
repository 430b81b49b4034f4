"""The real loop, end to end, on the tiny experiment (a seconds-long seed and loop)."""

import json
import math

from tests.conftest import run_cli


def read_jsonl(p):
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def test_tiny_loop_writes_every_artifact(tmp_path, cache_dir):
    run = tmp_path / "run"
    r = run_cli(["+experiment=tiny", "iterations=2", "train.steps=8"], run, cache_dir)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"run directory: {run}" in r.stdout
    summary = json.loads((run / "summary.json").read_text())
    rows = summary["iterations"]
    assert [x["iteration"] for x in rows] == [0, 1, 2]
    for x in rows[1:]:
        assert x["judge/parse_fail_rate"] == 0.0
        assert "select/kept" in x and "time/iteration_s" in x and "eval/accuracy" in x
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
    assert len(read_jsonl(run / "metrics.jsonl")) == 3
    assert "iter  eval acc" in r.stdout  # the per-iteration table


def test_random_init_still_judges_with_finite_scores(tmp_path, cache_dir):
    run = tmp_path / "rand"
    r = run_cli(["+experiment=tiny", "model.init=random", "iterations=1"], run, cache_dir)
    assert r.returncode == 0, r.stderr[-3000:]
    judg = read_jsonl(run / "iter_001" / "judgments.jsonl")
    assert judg and all(j["score"] is not None and math.isfinite(j["score"]) for j in judg)


def test_controls_run(tmp_path, cache_dir):
    for strategy in ("random", "majority", "logprob"):
        run = tmp_path / strategy
        r = run_cli(["+experiment=tiny", f"selection.strategy={strategy}", "eval.judge=false"], run, cache_dir)
        assert r.returncode == 0, r.stderr[-3000:]
        sel = read_jsonl(run / "iter_001" / "selected.jsonl")
        assert sel, strategy


def test_bad_config_fails_before_compute(tmp_path, cache_dir):
    r = run_cli(["+experiment=tiny", "selection.top_k=9"], tmp_path / "bad", cache_dir)
    assert r.returncode != 0
    assert "selection.top_k=9 exceeds sampling.k=4" in r.stderr
    r = run_cli(["+experiment=tiny", "data.train_prompts=/nonexistent.jsonl", "data.eval_prompts=/nonexistent.jsonl"],
                tmp_path / "bad2", cache_dir)
    assert r.returncode != 0 and "prompt file not found: /nonexistent.jsonl" in r.stderr
    assert "Traceback" not in r.stderr
