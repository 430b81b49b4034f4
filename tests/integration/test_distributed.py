"""The training stage (SFT and DPO) in 2 processes (torchrun + gloo on CPU), the model loaded through the loop's own
`load_policy`: both ranks end with the same adapter."""

import copy

import pytest
from peft import PeftModel

from selfreward.records import Pair, Selection
from selfreward.tasks.seed import ensure_seed
from selfreward.train.job import adapter_digest
from selfreward.train.stage import launch
from tests.conftest import compose_config


@pytest.mark.parametrize("objective", ["sft", "dpo"])
def test_two_processes_train_one_adapter(tmp_path, cache_dir, tiny_model, objective):
    cfg = compose_config(["+experiment=tiny", f"train={objective}", "train.processes=2",
                          "train.accelerate_config=cpu.yaml", "train.steps=6", "train.batch_size=8",
                          "train.micro_batch=2"])
    model_path = str(ensure_seed(cfg.model.seed, progress=False))
    rows = [Selection(f"{a}x+{b}={a * x + b}", f"x={x}", str(k), 0, 5.0, None)
            for k, (a, b, x) in enumerate([(2, 3, 4), (3, 1, 5), (5, 2, 7), (4, 9, 2), (6, 6, 6), (7, 1, 3)])]
    pairs = [Pair(r.prompt, r.completion, "x=99", r.prompt_id, 5.0, 1.0) for r in rows]
    d = tmp_path / "iter_001"
    d.mkdir()
    stats = launch(d, copy.deepcopy(tiny_model[0]), rows, pairs, cfg, seed=1, model_path=model_path, name=objective)
    assert stats["steps"] == 6 and stats["skipped_steps"] == 0
    assert ("train/rewards_margin" in stats) == (objective == "dpo")
    digests = stats["rank_sha256"]
    assert len(digests) == 2 and digests[0] == digests[1]  # DDP kept the ranks in step

    loaded = PeftModel.from_pretrained(copy.deepcopy(tiny_model[0]), d / "adapter")
    assert adapter_digest(loaded) == digests[0]  # what rank 0 saved is what both trained
    assert any(p.abs().sum() > 0 for n, p in loaded.named_parameters() if "lora_B" in n)  # training moved B off zero
    assert not (d / ".train_job").exists()
