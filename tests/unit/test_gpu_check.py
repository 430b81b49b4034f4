"""benchmarks/gpu_check_llama3_8b.py composes and runs as far as a machine without CUDA allows: the 8B-shaped stand-in
(Llama 3's vocabulary size, chat markers), the data, the composed `+experiment=llama3_8b` config and its plan; then it
stops with exit code 2 and says why."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the script runs the whole check (minutes)")
def test_gpu_check_builds_the_stand_in_and_stops_where_it_needs_cuda(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check_llama3_8b.py"), str(tmp_path),
                        "--prompts", "16"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    assert "no CUDA device here" in r.stderr and "8.03B parameters" in r.stdout  # the plan of the 8B shapes
    assert "sleep mode on" in r.stdout and "K=8" in r.stdout  # the experiment's settings, composed
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert (config["num_hidden_layers"], config["hidden_size"], config["vocab_size"]) == (32, 4096, 128256)
    assert not list((tmp_path / "model").glob("*.safetensors"))  # nothing to download or load: random weights

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tmp_path / "model")
    assert len(tok) == 128256 and tok.eos_token == "<|eot_id|>"
    text = "Request 7: explain why.\nScore:4"
    assert tok.decode(tok(text, add_special_tokens=False).input_ids) == text
    assert len((tmp_path / "data" / "train.jsonl").read_text().splitlines()) == 16
