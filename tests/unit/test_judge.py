import json
import math
import re
import time

import pytest
import torch

from selfreward import scorers
from selfreward.backends.hf import HFBackend
from selfreward.prompting import render_judge
from selfreward.scorers import combined, pairwise, reward_model, rubric, verifier
from selfreward.scorers.rubric import schema_regex
from tests.conftest import cand


def judge(backend, candidates, cfg, seed=0):
    return scorers.score(backend, candidates, cfg, seed)


def rubric_cfg(**settings):
    return rubric.Config(rubric=rubric.RubricSettings(**settings))


def verifier_cfg(**settings):
    return verifier.Config(verifier=verifier.VerifierSettings(**settings))


def test_schema_regex_has_no_literal_space_and_bounds_scores():
    rx = schema_regex(r"[0-9]+", "Score:", [1, 2, 3, 4, 5])
    assert rx == r"[0-9]+Score:[12345]"
    assert re.fullmatch(rx, "12Score:5") and not re.fullmatch(rx, "12Score:6")


def test_rubric_renders_in_sandbox(tmp_path):
    assert render_judge("equation_check.jinja", "2x+1=5", "x=2") == "check 2x+1=5 x=2"
    evil = tmp_path / "evil.jinja"
    evil.write_text("{{ prompt.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(Exception, match="unsafe|not safely|access"):
        render_judge(str(evil), "a", "b")


def test_constraints_not_luck_make_random_weights_parse(tiny_model):
    """A randomly initialised model still produces only schema-valid judgments with finite scores."""
    from transformers import AutoModelForCausalLM

    model, tok = tiny_model
    torch.manual_seed(1)
    random_model = AutoModelForCausalLM.from_config(model.config).eval()
    backend = HFBackend(random_model, tok, progress=False)
    cands = [cand(str(i), 0, t, prompt=f"{i + 2}x+3={2 * (i + 2) + 3}")
             for i, t in enumerate(["x=2", "x=9", "zz", "x=", "x=12345"])]
    cfg = rubric_cfg(max_new_tokens=40)
    rows = judge(backend, cands, cfg, seed=0)
    rx = schema_regex(cfg.rubric.reasoning_regex, cfg.rubric.score_prefix, cfg.scores)
    for r in rows:
        assert re.fullmatch(rx, r.raw), r.raw
        assert math.isfinite(r.score) and 1.0 <= r.score <= 5.0


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_batched_constraint_matches_outlines_processor(tiny_model, temperature):
    """Our one-step-per-batch mask gives the same judgments, token for token, as Outlines' per-row processor,
    on random weights (so the constraint, not the model, decides most tokens)."""
    from outlines.backends import get_regex_logits_processor
    from transformers import AutoModelForCausalLM

    model, tok = tiny_model
    torch.manual_seed(2)
    random_model = AutoModelForCausalLM.from_config(model.config).eval()
    cands = [cand(str(i), c, f"x={c}", prompt=f"{i + 2}x+{c}={2 * (i + 2) + c}")
             for i in range(6) for c in range(3)]
    cfg = rubric_cfg(max_new_tokens=40, temperature=temperature)
    ours = judge(HFBackend(random_model, tok, progress=False), cands, cfg, seed=3)

    class OutlinesBackend(HFBackend):
        def _processor(self, regex):
            super()._processor(regex)  # builds self._outlines
            proc = get_regex_logits_processor(None, self._outlines, regex)
            proc.reset()
            return proc

    theirs = judge(OutlinesBackend(random_model, tok, progress=False), cands, cfg, seed=3)
    assert [r.raw for r in ours] == [r.raw for r in theirs]
    assert [r.score for r in ours] == pytest.approx([r.score for r in theirs], abs=1e-6)
    assert len({r.raw for r in ours}) > 3  # varied outputs, not one string repeated


def test_score_only_judge_is_one_forward_pass_equal_to_constrained_decoding(tiny_model):
    """With no reasoning before the score, the judge reads the score token's distribution in one forward pass; it gives
    what constrained decoding of prefix + digit gives (random weights: spread-out distributions; mixed prompt lengths:
    left padding)."""
    from transformers import AutoModelForCausalLM

    from selfreward.prompting import chat

    model, tok = tiny_model
    torch.manual_seed(4)
    backend = HFBackend(AutoModelForCausalLM.from_config(model.config).eval(), tok, progress=False)
    cands = [cand(str(i), 0, t, prompt=f"{i + 2}x+{7 * i}={2 * (i + 2) + 7 * i}")
             for i, t in enumerate(["x=2", "x=123", "zz", "x=", "x=40"])]
    cfg = rubric_cfg(reasoning_regex="", score_prefix=":", max_new_tokens=4)
    rows = judge(backend, cands, cfg, seed=0)
    prompts = [chat(tok, render_judge(cfg.rubric.template, c.prompt, c.text)) for c in cands]
    decoded = backend.judge(prompts, schema_regex("", ":", cfg.scores), list(cfg.scores), 0.0, 4, seed=0)
    assert [r.score for r in rows] == pytest.approx([d.expected for d in decoded], abs=1e-4)
    assert [r.raw for r in rows] == [d.raw[-1] for d in decoded]  # the argmax digit
    assert len({round(r.score, 3) for r in rows}) > 1 and all(1 < r.score < 5 for r in rows)


def test_truncated_judgment_is_nan_and_counted(tiny_model):
    model, tok = tiny_model
    backend = HFBackend(model, tok, progress=False)
    cands = [cand("0", 0, "x=2", prompt="2x+1=5")]
    rows = judge(backend, cands, rubric_cfg(max_new_tokens=3), seed=0)
    assert math.isnan(rows[0].score) and rows[0].parse_fail == 1


def test_expected_score_lies_between_scores_and_n_samples_average(tiny_model):
    model, tok = tiny_model
    backend = HFBackend(model, tok, progress=False)
    cands = [cand("0", 0, "x=2", prompt="2x+1=5")]
    rows = judge(backend, cands, rubric_cfg(n=3, temperature=1.0, scoring="sampled"), seed=0)
    assert len(rows[0].raw) == 3
    assert rows[0].score in {v / 3 for v in range(3, 16)}


def test_verifier_scorer():

    cands = [cand("p", i, t, answer=a)
             for i, (t, a) in enumerate([("x=49", "49"), ("x=48", "49"), ("x=3", None)])]
    rows = judge(None, cands, verifier_cfg())
    assert [r.score for r in rows[:2]] == [5.0, 1.0]
    assert math.isnan(rows[2].score) and rows[2].parse_fail == 1


def _code_rows():
    tests = "assert add(2, 3) == 5\nassert add(-1, 1) == 0\n"
    texts = ["```python\ndef add(a, b):\n    return a + b\n```", "def add(a, b):\n    return a * b\n",
             "while True:\n    pass\n", "import os\nos._exit(0)\n"]
    rows = [cand("c", i, t, prompt="write add", tests=tests) for i, t in enumerate(texts)]
    rows.append(cand("a", 0, "x=2", prompt="2x+1=5", answer="2"))
    rows.append(cand("n", 0, "hello", prompt="hi"))
    return rows


def test_verifier_answer_regex():

    cands = [cand("p", i, t, answer="7")
             for i, t in enumerate(["Answer: 7 (checked 3 times)", "Answer: 3, not 7", "7"])]
    default = [r.score for r in judge(None, cands, verifier_cfg())]
    assert default == [5.0, 1.0, 5.0]  # math-verify reads the stated answer, not merely the last number
    custom = [r.score for r in judge(None, cands, verifier_cfg(answer_regex=r"Answer:\s*(\S+)"))]
    assert custom == [5.0, 1.0, 1.0]


def test_verifier_runs_code_tests_and_picks_by_row():

    t = time.time()
    rows = judge(None, _code_rows(), verifier_cfg(timeout=2.0))
    assert time.time() - t < 6.0  # the hanging candidate is cut at 2 s, beside the others (2 workers)
    assert [r.score for r in rows[:5]] == [5.0, 1.0, 1.0, 1.0, 5.0]
    assert rows[0].raw == "passed" and rows[2].raw.startswith("timeout") and "AssertionError" in rows[1].raw
    assert math.isnan(rows[5].score) and rows[5].parse_fail == 1
    only_answer = judge(None, _code_rows(), verifier_cfg(mode="answer"))
    assert all(math.isnan(r.score) for r in only_answer[:4]) and only_answer[4].score == 5.0
    only_code = judge(None, _code_rows()[:1] + _code_rows()[4:5], verifier_cfg(mode="code"))
    assert only_code[0].score == 5.0 and math.isnan(only_code[1].score)


def test_combined_gate_and_weighted(tiny_model):
    model, tok = tiny_model
    backend = HFBackend(model, tok, progress=False)
    cands = [cand("0", i, t, prompt="2x+1=5", answer="2")
             for i, t in enumerate(["x=2", "x=3", "x=02"])]
    gate = judge(backend, cands, combined.Config(), seed=0)
    assert gate[1].score == 0.0 and gate[1].judge_prompt is None  # failed: below every pass, never self-judged
    for r in (gate[0], gate[2]):
        assert 1.0 <= r.score <= 5.0 and r.judge_prompt == "check 2x+1=5 " + cands[r.cand_idx].text
    self_rows = judge(backend, cands, rubric.Config(), seed=0)
    cfg = combined.Config(combined=combined.CombinedSettings(mode="weighted", weights={"verifier": 1.0, "self": 0.5}))
    weighted = judge(backend, cands, cfg, seed=0)
    for w, s, v in zip(weighted, self_rows, [5.0, 1.0, 5.0]):
        assert w.score == pytest.approx(v + 0.5 * s.score) and set(w.raw) == {"verifier", "self"}


def test_pairwise_matchups_cover_all_pairs_or_sampled_opponents():
    from selfreward.scorers.pairwise import matchups

    assert matchups([0, 1, 2, 3], 1, "s") == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    big = matchups(list(range(8)), 2, "s")
    assert big == matchups(list(range(8)), 2, "s") and 8 <= len(big) <= 16  # seeded; each plays >= 2
    assert all(sum(i in p for p in big) >= 2 for i in range(8))


def test_pairwise_scores_win_rates_and_reports_position_bias(tiny_model):
    """Random weights: verdicts are arbitrary, but always parse; scores are win rates on the 1-5 scale."""
    from transformers import AutoModelForCausalLM

    from selfreward.observe.metrics import judge_report

    model, tok = tiny_model
    torch.manual_seed(2)
    backend = HFBackend(AutoModelForCausalLM.from_config(model.config).eval(), tok, progress=False)
    cands = [cand(p, i, t, prompt=f"{p}x+1=5")
             for p in ("2", "3") for i, t in enumerate(["x=2", "x=3", "x=9"])]
    cfg = pairwise.Config(pairwise=pairwise.PairwiseSettings(score_prefix=":", max_new_tokens=4))
    rows = judge(backend, cands, cfg, seed=0)
    assert all(r.comparisons == 2 and r.parse_fail == 0 for r in rows)  # K=3: all pairs, each candidate in 2
    assert all(r.score in {1.0, 3.0, 5.0} for r in rows)
    for pid in ("2", "3"):  # a pair yields one win or none (when the orders disagree)
        group = [r for r in rows if r.prompt_id == pid]
        wins = sum((r.score - 1) / 2 for r in group)
        assert wins + sum(r.disagree for r in group) / 2 == 3
    assert all(len(r.raw) == 2 and r.raw[0][1] in (1.0, 2.0) for r in rows)
    report = judge_report(cands, rows, 3.0)
    assert 0.0 <= report["judge/position_disagreement"] <= 1.0 and report["judge/pairs_judged"] == 6


def _tiny_reward_model(path):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from selfreward.m0.builtin import build_tokenizer

    tok = build_tokenizer()
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256, num_labels=1,
                         pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    LlamaForSequenceClassification(config).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def test_reward_model_scores_are_finite_deterministic_and_batch_invariant(tmp_path):
    from selfreward.records import Judgment
    from selfreward.scorers.reward_model import reward

    path = _tiny_reward_model(tmp_path / "rm")
    cands = [cand(str(i % 3), i, "x=" + "2" * (i + 1), prompt=f"{i + 2}x+1={2 * i + 5}")
             for i in range(7)]
    one = reward(cands, path, batch_size=1, progress=False)
    many = reward(cands, path, batch_size=4, progress=False)
    again = judge(None, cands, reward_model.Config(reward_model=reward_model.RewardModelSettings(path, batch_size=7)))
    assert all(isinstance(r, Judgment) for r in one)
    assert set(one[0].to_row()) == {"prompt_id", "cand_idx", "judge_prompt", "raw", "score", "parse_fail"}
    assert all(math.isfinite(r.score) for r in one) and len({round(r.score, 6) for r in one}) > 1
    assert [r.score for r in many] == pytest.approx([r.score for r in one], abs=1e-5)
    assert [r.score for r in again] == pytest.approx([r.score for r in one], abs=1e-5)
    assert one[0].judge_prompt == "<|user|>2x+1=5<|assistant|>x=2</s>"  # the reward model's own chat template


def test_code_examples_score_end_to_end():
    """examples/*.jsonl: read as prompt rows (tests kept), reference solutions pass, a wrong one fails."""
    from pathlib import Path

    from selfreward.data import read_prompts

    root = Path(__file__).resolve().parents[2] / "examples"
    rows = []
    for name in ("code_train.jsonl", "code_eval.jsonl"):
        good, bad = read_prompts(str(root / name))
        assert not bad and all(r.tests for r in good)
        rows += good
    solutions = {json.loads(line)["id"]: json.loads(line)["solution"]
                 for name in ("code_train.jsonl", "code_eval.jsonl") for line in (root / name).read_text().splitlines()}
    cands = [cand(r.id, k, solutions[r.id] if k == 0 else "def nothing(): pass", prompt=r.prompt, tests=r.tests,
                  entry_point=r.entry_point) for r in rows for k in range(2)]
    scores = [r.score for r in judge(None, cands, verifier_cfg(mode="code"))]
    assert scores == [5.0, 1.0] * len(rows)
    assert any(r.entry_point for r in rows)
