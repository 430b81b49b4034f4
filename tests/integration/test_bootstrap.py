"""M0 for any model (`selfreward.bootstrap`), on the shipped seed: balanced judge examples from the seed split only, a
model directory the loop loads, and the judge preflight that stops a run before training."""

import json

from selfreward import data
from selfreward.backends.hf import HFBackend
from selfreward.backends.load import load_policy
from selfreward.m0 import bootstrap, resolve
from selfreward.sample import sample
from selfreward.scorers.verifier import settings_of
from tests.conftest import compose_config, run_loop

SMALL = ["data.n_train=96", "data.n_eval=16", "data.prompts_per_iteration=16", "sampling.k=4", "eval.k=2",
         "train.epochs=0", "train.steps=4", "train.batch_size=8", "iterations=1", "tracking.mode=disabled",
         "judge.rubric.reasoning_regex=''", "model.bootstrap.prompts=32", "model.bootstrap.k=6",
         "model.bootstrap.epochs=1", "model.bootstrap.batch_size=8"]


def test_judge_examples_are_balanced_and_from_the_seed_split_only(tmp_path, cache_dir):
    cfg = compose_config(SMALL)
    policy, tok = load_policy(cfg, resolve(cfg))
    train, evals, _ = data.load(cfg.data, tmp_path)
    pool, seed_split = bootstrap.split(train, cfg)
    assert len(seed_split) == 32 and not {p.id for p in seed_split} & {p.id for p in pool + evals}
    cands = sample(HFBackend(policy, tok, progress=False), seed_split, cfg.sampling, 1, settings_of(cfg.judge))
    examples = bootstrap.judge_examples(cands, cfg, tok, seed=0)
    hi, lo = bootstrap.score_token(tok, 5), bootstrap.score_token(tok, 1)
    targets = [e.ids[-1] for e in examples]
    assert examples and targets.count(hi) == targets.count(lo) == len(examples) // 2  # balanced
    assert all(e.n_prompt == len(e.ids) - 1 for e in examples)  # the loss falls on the score token alone
    texts = [tok.decode(e.ids) for e in examples]
    seed_prompts = {p.prompt for p in seed_split}
    assert all(any(p in t for p in seed_prompts) for t in texts)
    assert not any(p.prompt in t for t in texts for p in pool + evals if p.prompt not in seed_prompts)


def test_the_loop_builds_m0_runs_on_it_and_resumes_it(tmp_path, cache_dir):
    run = tmp_path / "run"
    rows = run_loop([*SMALL, "model.bootstrap.enabled=true", "model.bootstrap.instruction=true"], run)
    m0 = run / "m0"
    figures = json.loads((m0 / "bootstrap.json").read_text())
    assert (m0 / "config.json").is_file() and (m0 / "model.safetensors").is_file()
    assert figures["judge_examples"] > 0 and figures["instruction_examples"] > 0
    assert {"base/judge/auc_within", "m0/judge/auc_within"} <= set(figures)
    # the generator is measured after judge training too (judge data alone can teach score tokens everywhere)
    assert 0 <= figures["m0/sample/accuracy_holdout"] <= 1 and 0 <= figures["base/sample/accuracy_holdout"] <= 1
    assert rows[0]["bootstrap/judge_examples"] == figures["judge_examples"]
    assert [r["iteration"] for r in rows] == [0, 1]
    # the loop's prompts never include the seed split
    cfg = compose_config(SMALL)
    train, _, _ = data.load(cfg.data, tmp_path / "d")
    seed_ids = {p.id for p in bootstrap.split(train, cfg)[1]}
    cands = [json.loads(line) for line in (run / "iter_001" / "candidates.jsonl").read_text().splitlines()]
    assert cands and not {c["prompt_id"] for c in cands} & seed_ids
    # M0 is loaded as the model directory it is; a second start reuses it rather than rebuilding
    stamp = (m0 / "model.safetensors").stat().st_mtime_ns
    run_loop([*SMALL, "model.bootstrap.enabled=true", "model.bootstrap.instruction=true"], run)
    assert (m0 / "model.safetensors").stat().st_mtime_ns == stamp


def test_preflight_stops_before_training_with_its_advice(tmp_path, cache_dir, capsys):
    run = tmp_path / "run"
    rows = run_loop([*SMALL, "alerts.judge_auc_within_min=1.01", "alerts.early_stop=true", "iterations=2"], run)
    assert [r["iteration"] for r in rows] == [0] and not (run / "iter_001").exists()
    alerts = json.loads((run / "summary.json").read_text())["alerts"]
    assert "judge/auc_within" in [a["metric"] for a in alerts]  # the score-only seed may fail on preferences too
    assert all(a["kind"] == "judge" and a["iteration"] == 0 for a in alerts)
    out = capsys.readouterr().out
    assert "judge=verifier" in out and "stopping before any training" in out


def test_m0_command_writes_a_model_directory_the_loop_takes(tmp_path, cache_dir):
    from selfreward.m0.__main__ import main

    out = tmp_path / "m0"
    main(["--out", str(out), *SMALL])
    figures = json.loads((out / "bootstrap.json").read_text())
    assert figures["seed_prompts"] == 32 and (out / "model.safetensors").is_file()
    rows = run_loop([*SMALL, f"model.path={out}"], tmp_path / "run")
    assert [r["iteration"] for r in rows] == [0, 1]


def test_a_control_on_m0_never_sees_its_seed_split(tmp_path, cache_dir):
    """M0 lists the prompts it was built on; a run on `model.path=RUN/m0` (the controls) leaves them out of training
    and evaluation whatever its pool sizes: here the pool holds them and two iterations wrap around it."""
    run = tmp_path / "run"
    run_loop([*SMALL, "model.bootstrap.enabled=true", "iterations=0"], run)
    seed_texts = set(json.loads((run / "m0" / "bootstrap.json").read_text())["seed_prompt_texts"])
    assert len(seed_texts) == 32
    control = tmp_path / "control"
    rows = run_loop([*SMALL, f"model.path={run / 'm0'}", "data.prompts_per_iteration=64", "iterations=2"], control)
    assert rows[0]["data/seed_split_excluded"] == 32
    for it in (1, 2):
        lines = (control / f"iter_{it:03d}" / "candidates.jsonl").read_text().splitlines()
        cands = [json.loads(line) for line in lines]
        assert cands and not {c["prompt"] for c in cands} & seed_texts
    evals = [json.loads(line) for line in (control / "iter_000" / "eval.jsonl").read_text().splitlines()]
    assert not {e["prompt"] for e in evals} & seed_texts


def test_sequence_task_through_the_loop(tmp_path, cache_dir):
    """`data.task=sequence` end to end on a small model built here (the tiny recipe with room for the rubric): a
    score-only self-judge, selection, LoRA training, evaluation. (The tiny model never answers a sequence right, so
    M0 has no judge example to learn from: the seed split is tested in tests/unit/test_sequence.py.)"""
    run = tmp_path / "run"
    rows = run_loop(["+experiment=tiny", "data.task=sequence", "data.n_train=64", "data.n_eval=16",
                     "model.builtin.max_positions=384", "judge.rubric.template=sequence_score_base.jinja",
                     "judge.rubric.reasoning_regex=''", "judge.rubric.score_prefix='\nScore(1-5):'",
                     "sampling.stop=[',']", "iterations=1"], run)
    assert [r["iteration"] for r in rows] == [0, 1]
    assert rows[1]["train/steps"] > 0 and rows[1]["select/kept"] > 0
    cands = [json.loads(line) for line in (run / "iter_001" / "candidates.jsonl").read_text().splitlines()]
    assert cands and all("," not in c["text"] for c in cands)  # cut at the stop string
    assert all(c["prompt"].endswith(",") and c["answer"].isdigit() for c in cands)
    judged = [json.loads(line) for line in (run / "iter_001" / "judgments.jsonl").read_text().splitlines()]
    assert len(judged) == len(cands) and all(1.0 <= j["score"] <= 5.0 for j in judged)
