"""The SFT stage in several processes (one per device), launched by the loop through `accelerate launch`.

    accelerate launch --config_file conf/accelerate/fsdp.yaml --num_processes 4 -m selfreward.train_job JOB.json

JOB.json names the run's resolved config, the base model directory, the adapter to go on training (or none),
the rows to train on and the output directory. Every rank draws the same batches and trains on its slice; rank 0
saves the adapter. Each rank writes the SHA-256 of its adapter weights, so a caller can check they agree.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import selfreward.conf
import torch
import yaml

# the top-level conf/ folder ships as the package selfreward.conf (see pyproject's package-dir)
ACCELERATE_DIR = Path(next(iter(selfreward.conf.__path__))) / "accelerate"


def adapter_digest(model) -> str:
    """SHA-256 over the trainable (adapter) tensors, in name order."""
    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        if "lora_" in name:
            h.update(name.encode())
            h.update(p.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


def launch(cfg, job: dict, out: Path) -> dict:
    """Run the SFT stage in `cfg.train.processes` processes; returns the training stats rank 0 wrote."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "job.json").write_text(json.dumps(job))
    conf = Path(cfg.train.accelerate_config)
    if not conf.is_file():
        conf = ACCELERATE_DIR / cfg.train.accelerate_config
    if not conf.is_file():
        raise FileNotFoundError(f"train.accelerate_config={cfg.train.accelerate_config!r}: no such file (nor in {ACCELERATE_DIR})")
    n, job_args = str(cfg.train.processes), ["-m", "selfreward.train_job", str(out / "job.json")]
    env = dict(os.environ)
    if yaml.safe_load(conf.read_text()).get("use_cpu"):
        env["ACCELERATE_USE_CPU"] = "true"
        # accelerate launches several CPU processes only through MPI; torchrun starts them and Accelerator picks
        # the gloo backend from its environment
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", n, *job_args]
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(conf), "--num_processes", n,
               *job_args]
    print("[selfreward] training with", cfg.train.processes, "processes:", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True, env=env)
    stats = json.loads((out / "stats.json").read_text())
    stats["rank_sha256"] = [(out / f"rank{r}.sha256").read_text() for r in range(cfg.train.processes)]
    return stats


def main(job_file: str) -> None:
    from accelerate import Accelerator
    from omegaconf import OmegaConf
    from peft import PeftModel

    from selfreward.backends.hf import load
    from selfreward.loop import replay_examples
    from selfreward.train import train_lora

    job = json.loads(Path(job_file).read_text())
    cfg = OmegaConf.create(job["config"])
    acc = Accelerator()
    m = cfg.model
    model, tokenizer = load(job["model_path"], dtype=m.dtype, device=str(acc.device), gguf_file=m.gguf_file,
                            trust_remote_code=m.trust_remote_code)
    if job.get("adapter"):
        model = PeftModel.from_pretrained(model, job["adapter"], is_trainable=True)
    rows = [json.loads(line) for line in Path(job["rows"]).read_text().splitlines() if line.strip()]
    torch.manual_seed(job["seed"])
    trained, stats = train_lora(model, tokenizer, rows, replay_examples(cfg, tokenizer), cfg.train, job["seed"],
                                cfg.sampling.system_prompt, cfg.sampling.few_shot, accelerator=acc)
    out = Path(job["out"])
    (out / f"rank{acc.process_index}.sha256").write_text(adapter_digest(trained))
    acc.wait_for_everyone()
    if acc.is_main_process:
        acc.unwrap_model(trained).save_pretrained(out / "adapter")
        (out / "stats.json").write_text(json.dumps(stats))
    acc.wait_for_everyone()
    acc.end_training()


if __name__ == "__main__":
    main(sys.argv[1])
