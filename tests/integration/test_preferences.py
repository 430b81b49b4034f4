"""The judge measured on labelled preference pairs, through the loop with the built-in seed: it ranks the built-in
task's pairs, a rubric that never shows the response ranks them at chance, and the preflight stops a run on prompts
without a verifier through the preference set alone."""

import json

from selfreward.config import DataConfig
from selfreward.preferences import task_pairs
from selfreward.tasks.equation import EquationTask, pool
from tests.conftest import run_loop

BASE = ["data.n_eval=16", "eval.k=2", "eval.preferences_n=48", "tracking.mode=disabled", "eval.kl=false",
        "eval.embeddings=false"]
# a loop iteration small enough for a test
ONE_ITERATION = ["iterations=1", "sampling.k=2", "data.prompts_per_iteration=8", "train.epochs=0", "train.steps=2",
                 "train.batch_size=4"]


def blind_rubric(tmp_path) -> str:
    """The built-in rubric without the response: a judge that cannot tell two responses apart."""
    path = tmp_path / "blind.jinja"
    path.write_text("check {{ prompt }}")
    return f"judge.rubric.template={path}"


def test_the_builtin_judge_ranks_the_tasks_pairs_and_a_blind_one_is_at_chance(tmp_path, cache_dir):
    run = tmp_path / "seeing"
    (row,) = run_loop([*BASE, "iterations=0", "eval.retest=true"], run)
    assert row["judge/pref_pairs"] == 48 and row["judge/pref_unscored"] == 0
    assert row["judge/pref_accuracy"] >= 0.8 and row["judge/auc_within"] >= 0.6  # both well above chance
    assert row["judge/retest_tau"] == 1.0  # a greedy judge under another seed ranks alike
    pairs = [json.loads(line) for line in (run / "preferences.jsonl").read_text().splitlines()]
    judgments = [json.loads(line) for line in (run / "iter_000" / "preferences.jsonl").read_text().splitlines()]
    assert len(pairs) == 48 and len(judgments) == 96
    assert json.loads((run / "summary.json").read_text())["judge_preflight"]["judge"] == "passed"

    (row,) = run_loop([*BASE, "iterations=0", blind_rubric(tmp_path)], tmp_path / "blind")
    assert row["judge/pref_accuracy"] == 0.5 and row["judge/pref_ties"] == 1.0


def prompt_files(tmp_path) -> list[str]:
    """Training and held-out prompts of the built-in task without answers (no verifier), and a preference file."""
    task = EquationTask()
    for name, rows in (("train", pool(task, 32, 1, evaluation=False)), ("eval", pool(task, 16, 2, evaluation=True))):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps({"prompt": r["prompt"]}) + "\n" for r in rows))
    data = DataConfig(task="equation", seed=7)
    (tmp_path / "prefs.jsonl").write_text("".join(json.dumps(p.to_row()) + "\n" for p in task_pairs(data, 48)))
    return ["data=prompts", f"data.train_prompts={tmp_path / 'train.jsonl'}",
            f"data.eval_prompts={tmp_path / 'eval.jsonl'}", *BASE, *ONE_ITERATION, "alerts.early_stop=true"]


def test_the_preflight_stops_a_blind_judge_through_the_preference_set_alone(tmp_path, cache_dir):
    common = [*prompt_files(tmp_path), f"eval.preferences={tmp_path / 'prefs.jsonl'}"]
    rows = run_loop([*common, blind_rubric(tmp_path)], tmp_path / "blind")
    summary = json.loads((tmp_path / "blind" / "summary.json").read_text())
    assert len(rows) == 1 and not (tmp_path / "blind" / "iter_001").exists()  # stopped before training
    assert summary["judge_preflight"]["judge"] == "failed" and "judge/auc_within" not in rows[0]
    assert [a["metric"] for a in summary["alerts"]] == ["judge/pref_accuracy"]

    rows = run_loop(common, tmp_path / "seeing")
    assert [r["iteration"] for r in rows] == [0, 1] and rows[1]["judge/pref_accuracy"] >= 0.6
    assert json.loads((tmp_path / "seeing" / "summary.json").read_text())["judge_preflight"]["judge"] == "passed"


def test_a_judge_nothing_can_measure_is_said_at_start_and_stops_only_when_asked(tmp_path, cache_dir, capsys):
    common = [*prompt_files(tmp_path), "eval.preferences=null"]
    rows = run_loop(common, tmp_path / "stop")
    out = capsys.readouterr().out
    assert "nothing will measure the judge" in out and "eval.preferences" in out
    assert len(rows) == 1
    summary = json.loads((tmp_path / "stop" / "summary.json").read_text())
    assert summary["judge_preflight"] == {"judge": "unmeasured", "figures": {}, "thresholds": {}}
    assert [a["kind"] for a in summary["alerts"]] == ["judge unmeasured"]

    rows = run_loop([*common, "alerts.require_measured_judge=false"], tmp_path / "go")
    assert [r["iteration"] for r in rows] == [0, 1]
    assert json.loads((tmp_path / "go" / "summary.json").read_text())["judge_preflight"]["judge"] == "unmeasured"
