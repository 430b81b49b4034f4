import random

from selfreward.scorers.verifier import extract_answer, is_correct
from selfreward.tasks.equation import EquationTask, check_text, held_out, near_miss, pool


def test_check_text_substitutes_back():
    assert check_text("7x+34=377", "x=49") == ("7*49=343;343+34=377|377", 5)
    assert check_text("7x+34=377", "x=48") == ("7*48=336;336+34=370|377", 1)
    assert check_text("2x+1=5", "x=2") == ("2*2=4;4+1=005|005", 5)
    assert check_text("2x+1=5", "no idea")[1] == 1


def test_problems_are_consistent_and_split_is_disjoint():
    task = EquationTask()
    rows = pool(task, 300, seed=1, evaluation=False)
    evals = pool(task, 100, seed=2, evaluation=True)
    assert not {r["prompt"] for r in rows} & {r["prompt"] for r in evals}
    assert all(not held_out(r["prompt"]) for r in rows) and all(held_out(r["prompt"]) for r in evals)
    for r in rows:
        assert check_text(r["prompt"], task.response(r["answer"]))[1] == 5


def test_near_miss_is_wrong():
    rng = random.Random(0)
    assert all(near_miss(x, rng) != x for x in range(1, 60) for _ in range(5))


def test_verifier():
    assert extract_answer("x=49") == "49"
    assert extract_answer("so \\boxed{12} and 3") == "12"
    assert extract_answer("0049.") == "49"
    assert is_correct("x=49", "49") and not is_correct("x=4", "49")
    assert is_correct("nothing", None) is None


def test_builtin_model_rebuild_command_builds_a_loadable_model(tmp_path):
    """The documented rebuild command, `selfreward m0 --builtin --out DIR [model.builtin.FIELD=value]`, on a tiny
    recipe; the old command (`python -m selfreward.tasks.seed --out DIR FIELD=value`) says so and builds the same."""
    import json
    import subprocess
    import sys

    recipe = ["hidden_size=32", "layers=1", "heads=2", "intermediate_size=32", "steps=4", "self_steps=2",
              "batch_size=8", "report_prompts=4"]
    r = subprocess.run([sys.executable, "-m", "selfreward", "m0", "--builtin", "--out", str(tmp_path / "new"),
                        *(f"model.builtin.{f}" for f in recipe)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    (out,) = [p for p in (tmp_path / "new").iterdir() if p.is_dir()]
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    report = json.loads((out / "seed_report.json").read_text())
    assert report["recipe"]["hidden_size"] == 32 and report["recipe_hash"] == out.name
    assert f"saved {out}" in r.stdout

    old = subprocess.run([sys.executable, "-m", "selfreward.tasks.seed", "--out", str(tmp_path / "old"), *recipe],
                         capture_output=True, text=True, timeout=300)
    assert old.returncode == 0, old.stderr[-3000:]
    assert "selfreward.tasks.seed is now selfreward m0 --builtin" in old.stderr
    assert [p.name for p in (tmp_path / "old").iterdir()] == [out.name]  # the same recipe


def test_old_m0_commands_name_the_new_one():
    import subprocess
    import sys

    for cmd, new in ((["-m", "selfreward.seed", "--help"], "is now selfreward m0"),
                     (["-m", "selfreward", "builtin-model", "--help"], "is now selfreward m0 --builtin")):
        r = subprocess.run([sys.executable, *cmd], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and new in r.stderr and "usage: selfreward m0" in r.stdout, r.stderr[-2000:]
