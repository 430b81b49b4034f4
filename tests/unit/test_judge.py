import math
import re

import pytest
import torch

from selfreward.backends.hf import HFBackend
from selfreward.config import JudgeConfig
from selfreward.judge import judge, schema_regex
from selfreward.prompting import render_judge


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
    cands = [{"prompt_id": str(i), "cand_idx": 0, "prompt": f"{i + 2}x+3={2 * (i + 2) + 3}", "text": t}
             for i, t in enumerate(["x=2", "x=9", "zz", "x=", "x=12345"])]
    cfg = JudgeConfig(max_new_tokens=40)
    rows = judge(backend, cands, cfg, seed=0)
    rx = schema_regex(cfg.reasoning_regex, cfg.score_prefix, cfg.scores)
    for r in rows:
        assert re.fullmatch(rx, r["raw"]), r["raw"]
        assert math.isfinite(r["score"]) and 1.0 <= r["score"] <= 5.0


def test_truncated_judgment_is_nan_and_counted(tiny_model):
    model, tok = tiny_model
    backend = HFBackend(model, tok, progress=False)
    cands = [{"prompt_id": "0", "cand_idx": 0, "prompt": "2x+1=5", "text": "x=2"}]
    rows = judge(backend, cands, JudgeConfig(max_new_tokens=3), seed=0)
    assert math.isnan(rows[0]["score"]) and rows[0]["parse_fail"] == 1


def test_expected_score_lies_between_scores_and_n_samples_average(tiny_model):
    model, tok = tiny_model
    backend = HFBackend(model, tok, progress=False)
    cands = [{"prompt_id": "0", "cand_idx": 0, "prompt": "2x+1=5", "text": "x=2"}]
    rows = judge(backend, cands, JudgeConfig(n=3, temperature=1.0, scoring="sampled"), seed=0)
    assert len(rows[0]["raw"]) == 3
    assert rows[0]["score"] in {v / 3 for v in range(3, 16)}


def test_verifier_scorer():
    from selfreward.judge import verify

    cands = [{"prompt_id": "p", "cand_idx": i, "text": t, "answer": a}
             for i, (t, a) in enumerate([("x=49", "49"), ("x=48", "49"), ("x=3", None)])]
    rows = verify(cands, JudgeConfig(kind="verifier"))
    assert [r["score"] for r in rows[:2]] == [5.0, 1.0]
    assert math.isnan(rows[2]["score"]) and rows[2]["parse_fail"] == 1
