"""One training process of a multi-process stage, launched by `train.stage.launch`:

    accelerate launch --config_file conf/accelerate/fsdp.yaml --num_processes 4 -m selfreward.train.job JOB.json

JOB.json names the run's resolved config, the base model directory, the adapter to go on training (or none), the
objective and the work directory holding the iteration's selected.jsonl, pairs.jsonl and replay.jsonl. The model is
loaded by the same `load_policy` as the loop's, so prompts are formatted alike. Every rank draws the same batches and
trains on its slice; rank 0 saves the adapter. Each rank writes the SHA-256 of its adapter weights, so a caller can
check they agree (under FSDP, of the whole adapter gathered from the shards).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch
from accelerate import Accelerator
from omegaconf import OmegaConf
from peft import PeftModel
from torch.distributed.tensor import DTensor

from selfreward.backends.load import load_policy
from selfreward.records import Pair, ReplayRow, Selection
from selfreward.rundir.artifacts import read_jsonl
from selfreward.train.stage import train


def adapter_state(model) -> dict[str, torch.Tensor]:
    """The adapter (LoRA) tensors by name, in name order, whole and on the CPU. FSDP leaves each rank a shard of each
    (a DTensor): gathering them is a collective, so every rank calls this."""
    return {name: (p.full_tensor() if isinstance(p, DTensor) else p).detach().cpu()
            for name, p in sorted(model.named_parameters()) if "lora_" in name}


def adapter_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over `adapter_state`'s tensors."""
    h = hashlib.sha256()
    for name, t in state.items():
        h.update(name.encode())
        h.update(t.float().numpy().tobytes())
    return h.hexdigest()


def save(acc, trained, stats: dict, out: Path) -> None:
    """Every rank writes the digest of its adapter; rank 0 saves the adapter (whole, not its shard) and the stats."""
    state = adapter_state(trained)
    (out / f"rank{acc.process_index}.sha256").write_text(adapter_digest(state))
    if acc.is_main_process:
        acc.unwrap_model(trained).save_pretrained(out / "adapter", state_dict=state)
        (out / "stats.json").write_text(json.dumps(stats))
    acc.wait_for_everyone()


def main(job_file: str) -> None:
    job = json.loads(Path(job_file).read_text())
    cfg, out = OmegaConf.create(job["config"]), Path(job["out"])
    acc = Accelerator()
    model, tokenizer = load_policy(cfg, job["model_path"], device=str(acc.device))
    if job.get("adapter"):
        model = PeftModel.from_pretrained(model, job["adapter"], is_trainable=True)
    selected, pairs = read_jsonl(out / "selected.jsonl", Selection), read_jsonl(out / "pairs.jsonl", Pair)
    replay = read_jsonl(out / "replay.jsonl", ReplayRow)
    trained, stats = train(model, tokenizer, selected, pairs, cfg, job["seed"], job["objective"], replay=replay,
                           accelerator=acc)
    save(acc, trained, stats, out)
    acc.end_training()


if __name__ == "__main__":
    main(sys.argv[1])
