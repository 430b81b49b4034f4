"""Training in 2 processes (torchrun + gloo on CPU), with DDP and with FSDP2 as `conf/accelerate/fsdp.yaml` sets it up:
the training stage (SFT and DPO, the model loaded through the loop's own `load_policy`) ends with one adapter on both
ranks, and `fit`'s step has the one-process step's gradient, on rows of very different lengths, uneven slices, an
empty rank and a non-finite loss on one rank.

accelerate runs FSDP only on accelerators (a CPU state never becomes FSDP), so for FSDP `_accelerator` sets the state
by hand; everything after that (accelerate's FSDP2 prepare, torch's fully_shard over gloo) is the real code path, in
float32 (fsdp.yaml's bf16 mixed precision is not tested here).

Run as a module (`python -m tests.integration.test_distributed ...`), this file is one of those 2 processes."""

import copy
import os
import random
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import yaml
from peft import LoraConfig, PeftModel, get_peft_model
from torch.distributed.tensor import DTensor

from selfreward.m0.builtin import ensure, replay_rows
from selfreward.records import Pair, Selection
from selfreward.train import sft
from selfreward.train.fit import fit
from selfreward.train.job import adapter_digest, adapter_state
from selfreward.train.stage import ACCELERATE_DIR, launch
from tests.conftest import compose_config

ROOT = Path(__file__).resolve().parents[2]
THIS = "tests.integration.test_distributed"


def _fsdp_env() -> dict:
    """fsdp.yaml's `fsdp_config` as `accelerate launch` hands it to the processes (FSDP_VERSION=2, ...)."""
    conf = yaml.safe_load((ACCELERATE_DIR / "fsdp.yaml").read_text())["fsdp_config"]
    return {key.upper(): str(v).lower() if isinstance(v, bool) else str(v) for key, v in conf.items()}


def _env(sharding: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), SHARDING=sharding)
    return {**env, "ACCELERATE_USE_FSDP": "true", **_fsdp_env()} if sharding == "fsdp" else env


def _accelerator():
    """accelerate over gloo: DDP, or FSDP2 (from the FSDP_* variables) where $SHARDING is fsdp. A rank left waiting
    in a collective fails after 60 s instead of gloo's 30 minutes."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin, InitProcessGroupKwargs

    acc = Accelerator(cpu=True, kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(seconds=60))])
    if os.environ["SHARDING"] == "fsdp":
        acc.state.distributed_type = DistributedType.FSDP
        acc.state.fsdp_plugin = FullyShardedDataParallelPlugin()
    return acc


@pytest.mark.parametrize("objective", ["sft", "dpo"])
@pytest.mark.parametrize("sharding", ["ddp", "fsdp"])
def test_two_processes_train_one_adapter(tmp_path, cache_dir, tiny_model, objective, sharding, monkeypatch):
    cfg = compose_config(["+experiment=tiny", f"train={objective}", "train.processes=2",
                          "train.accelerate_config=cpu.yaml", "train.steps=6", "train.batch_size=8",
                          "train.micro_batch=2"])
    model_path = str(ensure(cfg.model.builtin, progress=False))
    rows = [Selection(f"{a}x+{b}={a * x + b}", f"x={x}", str(k), 0, 5.0, None)
            for k, (a, b, x) in enumerate([(2, 3, 4), (3, 1, 5), (5, 2, 7), (4, 9, 2), (6, 6, 6), (7, 1, 3)])]
    pairs = [Pair(r.prompt, r.completion, "x=99", r.prompt_id, 5.0, 1.0) for r in rows]
    d = tmp_path / "iter_001"
    d.mkdir()
    if sharding == "fsdp":  # the job's processes start in this file, which runs `job.main` on an FSDP accelerator
        run = subprocess.run

        def run_here(cmd, **kw):
            cmd = [THIS if arg == "selfreward.train.job" else arg for arg in cmd]
            return run(cmd, **{**kw, "env": {**kw["env"], **_env("fsdp")}})

        monkeypatch.setattr(subprocess, "run", run_here)
    stats = launch(d, copy.deepcopy(tiny_model[0]), rows, pairs, replay_rows(cfg), cfg, seed=1, model_path=model_path,
                   name=objective)
    assert stats["steps"] == 6 and stats["skipped_steps"] == 0
    assert ("train/rewards_margin" in stats) == (objective == "dpo")
    digests = stats["rank_sha256"]
    assert len(digests) == 2 and digests[0] == digests[1]  # the ranks stayed in step

    loaded = PeftModel.from_pretrained(copy.deepcopy(tiny_model[0]), d / "adapter")
    assert adapter_digest(adapter_state(loaded)) == digests[0]  # what rank 0 saved is what both trained
    assert any(p.abs().sum() > 0 for n, p in loaded.named_parameters() if "lora_B" in n)  # training moved B off zero
    assert not (d / ".train_job").exists()


# --- fit's multi-process step against the one-process step ---------------------------------------------------------

POISON = 3  # a token only the poisoned row holds: its loss is NaN
MICRO_BATCHES = (0, 2)


def _steps() -> list[list[sft.Example]]:
    """Each step's rows. Rank r trains rows[r::2]; S: 5 tokens, L: 60 tokens, P: 7 tokens with a NaN loss."""
    rng = random.Random(0)

    def row(length: int, n_prompt: int, poison: bool = False) -> sft.Example:
        ids = [rng.randrange(4, 70) for _ in range(length)]  # the tiny seed's vocabulary is 70 tokens
        if poison:
            ids[-1] = POISON
        return sft.Example(ids, n_prompt)

    S, L = (lambda: row(5, 2)), (lambda: row(60, 20))
    uneven = [S(), L(), S(), L(), S(), L(), L()]
    return [
        [S(), L(), L(), L(), L()],  # 3 rows vs 2 with unequal token counts: a mean of per-rank means is wrong
        uneven,  # rank 0 cuts S S S | L, rank 1 L L L: different numbers of backwards
        [L()],  # rank 1 has no rows at all
        [L(), row(7, 2, poison=True), L(), S(), L(), L()],  # rank 1's first micro-batch is NaN, rank 0's are fine
        uneven,  # still in step after the skip
    ]


STEPS = _steps()


def _loss(model, batch, denominator):
    value = sft.loss(model, batch, denominator)
    return value * float("nan") if bool((batch["input_ids"] == POISON).any()) else value


def _fit(model, micro_batch: int, accelerator=None) -> tuple[dict, dict]:
    """(each step's gradients before clipping, stats) of `fit` on STEPS with a fixed LoRA init and lr 0 (so every
    step's gradient depends on its batch only)."""
    torch.manual_seed(0)
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    grads = {}

    def keep(step, params):  # FSDP's gradients are shards: gather them (every rank calls this)
        grads[step] = [(p.grad.full_tensor() if isinstance(p.grad, DTensor) else p.grad).detach().cpu().clone()
                       for p in params]

    stats = fit(peft_model, STEPS.__getitem__, sft.collate, _loss, len(STEPS), lr=0.0, pad_id=0, warmup=1,
                micro_batch=micro_batch, accelerator=accelerator, progress=False, grads_hook=keep)
    return grads, stats


@pytest.mark.parametrize("sharding", ["ddp", "fsdp"])
def test_two_process_step_is_the_one_process_step(tmp_path, cache_dir, tiny_model, sharding):
    model_path = ensure(compose_config(["+experiment=tiny"]).model.builtin, progress=False)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", THIS, str(tmp_path), str(model_path)]
    done = subprocess.run(cmd, cwd=ROOT, env=_env(sharding), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for micro_batch in MICRO_BATCHES:
        want, want_stats = _fit(copy.deepcopy(tiny_model[0]).cpu(), micro_batch)
        assert sorted(want) == [0, 1, 2, 4] and want_stats["skipped_steps"] == 1
        for rank in range(2):
            got, stats = torch.load(tmp_path / f"mb{micro_batch}_rank{rank}.pt")
            assert sorted(got) == sorted(want), f"rank {rank} stepped on {sorted(got)}"
            for step in want:
                for g, w in zip(got[step], want[step], strict=True):
                    assert torch.allclose(g, w, rtol=1e-4, atol=1e-5 * float(w.abs().max())), (
                        f"micro_batch={micro_batch} rank {rank} step {step}: gradient off by "
                        f"{float((g - w).abs().max()):.3g} (largest {float(w.abs().max()):.3g})")
            assert stats["steps"] == want_stats["steps"] and stats["skipped_steps"] == want_stats["skipped_steps"]
            assert stats["tokens"] == want_stats["tokens"]  # every row of the step, not one rank's slice
            assert stats["loss_first"] == pytest.approx(want_stats["loss_first"], rel=1e-5)
            assert stats["loss_last"] == pytest.approx(want_stats["loss_last"], rel=1e-5)


def _worker(out: str, model_path: str) -> None:
    """One of the 2 processes of `test_two_process_step_is_the_one_process_step`."""
    from selfreward.backends.hf import load

    acc = _accelerator()
    model, _ = load(model_path, dtype="float32", device="cpu")
    for micro_batch in MICRO_BATCHES:
        grads, stats = _fit(copy.deepcopy(model), micro_batch, acc)
        torch.save((grads, stats), Path(out) / f"mb{micro_batch}_rank{acc.process_index}.pt")
    acc.end_training()


if __name__ == "__main__":
    if sys.argv[1].endswith(".json"):  # a training job `launch` started (the FSDP case of the first test)
        from selfreward.train import job

        job.Accelerator = _accelerator
        job.main(sys.argv[1])
    else:
        _worker(*sys.argv[1:])
