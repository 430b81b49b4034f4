"""The loop on a CUDA device (bf16 weights, the transformers backend). Marked `gpu`: skipped, with the reason, where
torch sees no CUDA device (see tests/conftest.py)."""

import math

import pytest

from tests.conftest import run_loop

pytestmark = pytest.mark.gpu


def test_tiny_loop_on_cuda_in_bf16(tmp_path, cache_dir):
    rows = run_loop(["+experiment=tiny", "device=cuda", "model.dtype=bfloat16", "train.steps=8"], tmp_path / "run")
    assert rows[-1]["judge/parse_fail_rate"] == 0.0 and math.isfinite(rows[-1]["train/loss"])
    assert (tmp_path / "run" / "iter_001" / "adapter" / "adapter_model.safetensors").exists()


def test_score_only_judging_matches_constrained_decoding_on_cuda(tiny_model):
    import copy

    from selfreward.backends.hf import HFBackend
    from selfreward.scorers import rubric
    from tests.conftest import cand

    model, tok = tiny_model
    backend = HFBackend(copy.deepcopy(model).cuda(), tok, progress=False)
    cands = [cand(str(i), 0, t, prompt=f"{i + 2}x+3={2 * (i + 2) + 3}") for i, t in enumerate(["x=2", "x=9", "x=3"])]
    constrained = rubric.score(backend, cands, rubric.Config(), seed=0)
    assert all(1.0 <= j.score <= 5.0 and j.parse_fail == 0 for j in constrained)
