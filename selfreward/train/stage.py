"""The training stage: the one `train_stage` the loop calls and `train` every training process runs, whatever the
objective. The objective is the module whose `Config` the chosen `train=` group extends (`train/sft.py`, ...):

    Config                                              its settings (extends schema.TrainConfig)
    prepare(model, tokenizer, selected, pairs, replay, cfg, seed, fmt) -> (draw, examples) or (None, [])
    rows_per_step(cfg, replay)                          the iteration's own rows in one step (epochs count those)
    collate(rows, pad_id, device), loss(model, batch, denominator, cfg)    what `fit` runs
    report(model, examples, pad_id, cfg) -> {"train/...": value}       figures of the trained policy
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from types import ModuleType

import selfreward.conf
import torch
import yaml
from omegaconf import OmegaConf
from peft import LoraConfig, PeftModel, get_peft_model

from selfreward.records import Pair, PromptFormat, ReplayRow, Selection
from selfreward.rundir.artifacts import IterDir, atomic, write_json, write_jsonl
from selfreward.train.fit import fit
from selfreward.train.objectives import OBJECTIVES
from selfreward.train.sft import encode_row

ADAPTER = "adapter/adapter_model.safetensors"
# the top-level conf/ folder ships as the package selfreward.conf (see pyproject's package-dir)
ACCELERATE_DIR = Path(next(iter(selfreward.conf.__path__))) / "accelerate"
NOTHING = {"steps": 0, "skipped_steps": 0, "tokens": 0, "loss_first": math.nan, "loss_last": math.nan}


def objective_name(cfg_train) -> str:
    """The objective a train config belongs to: the module that defines its schema (`sft`, ...)."""
    kind = OmegaConf.get_type(cfg_train) if OmegaConf.is_config(cfg_train) else type(cfg_train)
    return kind.__module__.rsplit(".", 1)[-1]


def objective(name: str) -> ModuleType:
    return OBJECTIVES[name]


def steps_for(cfg_train, rows: int, per_step: int) -> int:
    """`train.epochs` passes over the iteration's rows, at most `train.steps` (or exactly `train.steps` at epochs=0)."""
    if cfg_train.epochs <= 0:
        return cfg_train.steps
    steps = max(1, math.ceil(cfg_train.epochs * rows / max(1, per_step)))
    return min(steps, cfg_train.steps) if cfg_train.steps else steps


def with_adapter(model, lora_cfg):
    """`model` with a new LoRA adapter on the target modules it has, or itself if it has one (train.merge=false)."""
    if isinstance(model, PeftModel):
        return model
    targets = [t for t in lora_cfg.target_modules if any(n.endswith(t) for n, _ in model.named_modules())]
    return get_peft_model(model, LoraConfig(r=lora_cfg.r, lora_alpha=lora_cfg.alpha, lora_dropout=lora_cfg.dropout,
                                            target_modules=targets or "all-linear", task_type="CAUSAL_LM"))


def train(model, tokenizer, selected: list[Selection], pairs: list[Pair], cfg, seed: int, name: str, *,
          replay: list[ReplayRow] = (), accelerator=None, progress: bool = True):
    """Train `model` with objective `name` on the iteration's data (and the `replay` rows the loop hands over).
    Returns (peft model, stats)."""
    t, obj = cfg.train, objective(name)
    torch.manual_seed(seed)  # before the adapter's init, so a resumed run trains the same adapter
    peft_model = with_adapter(model, t.lora)
    if t.gradient_checkpointing:
        peft_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    replay = [encode_row(tokenizer, r) for r in replay]
    draw, examples = obj.prepare(peft_model, tokenizer, selected, pairs, replay, t, seed, PromptFormat.of(cfg.sampling))
    if draw is None:
        return peft_model, dict(NOTHING)
    steps = steps_for(t, len(examples), obj.rows_per_step(t, replay))
    stats = fit(peft_model, draw, obj.collate, partial(obj.loss, cfg=t), steps, t.lr, tokenizer.pad_token_id,
                max_grad_norm=t.max_grad_norm, max_bad_steps=t.max_bad_steps, micro_batch=t.micro_batch,
                accelerator=accelerator, progress=progress, desc=f"train ({name})")
    return peft_model, {**stats, **obj.report(peft_model, examples, tokenizer.pad_token_id, t)}


def save_adapter(model, out: Path) -> None:
    with atomic(out) as tmp:
        model.save_pretrained(tmp)


def train_stage(it: IterDir, start, tokenizer, selected: list[Selection], pairs: list[Pair], cfg, seed: int,
                model_path: str, replay: list[ReplayRow] = ()):
    """Train in this process, or in `train.processes` processes, or (resuming) load the adapter a previous run of
    this stage saved; a saved adapter is loaded onto `start`'s base weights. Returns (peft model, stats)."""
    t0, name = time.time(), objective_name(cfg.train)
    if (stats := it.done("train")) is None:
        if cfg.train.processes <= 1:
            trained, stats = train(start, tokenizer, selected, pairs, cfg, seed, name, replay=replay)
            save_adapter(trained, it.path / "adapter")
            stats["seconds"] = time.time() - t0
            it.mark("train", [ADAPTER], stats)
            return trained, stats
        stats = {**launch(it.path, start, selected, pairs, replay, cfg, seed, model_path, name),
                 "seconds": time.time() - t0}
        it.mark("train", [ADAPTER], stats)
    if isinstance(start, PeftModel):  # train.merge=false: the saved adapter holds all training so far
        start = start.unload()
    return PeftModel.from_pretrained(start, it.path / "adapter", is_trainable=not cfg.train.merge), stats


def launch(d: Path, start, selected, pairs, replay, cfg, seed: int, model_path: str, name: str) -> dict:
    """Run `train` in `train.processes` processes (`selfreward.train.job`: accelerate with FSDP/DeepSpeed on GPUs,
    torchrun + gloo on CPU); returns rank 0's stats with every rank's adapter digest."""
    work = d / ".train_job"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    write_jsonl(work / "selected.jsonl", selected)
    write_jsonl(work / "pairs.jsonl", pairs)
    write_jsonl(work / "replay.jsonl", replay)
    adapter = None
    if isinstance(start, PeftModel):  # go on training the previous iteration's adapter
        start.save_pretrained(work / "start_adapter")
        adapter = str(work / "start_adapter")
    write_json(work / "job.json", {"config": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
                                   "model_path": model_path, "adapter": adapter, "seed": seed, "objective": name,
                                   "out": str(work)})
    conf = Path(cfg.train.accelerate_config)
    if not conf.is_file():
        conf = ACCELERATE_DIR / cfg.train.accelerate_config
    if not conf.is_file():
        raise FileNotFoundError(f"train.accelerate_config={cfg.train.accelerate_config!r}: no such file "
                                f"(nor in {ACCELERATE_DIR})")
    n, job_args = str(cfg.train.processes), ["-m", "selfreward.train.job", str(work / "job.json")]
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
    stats = json.loads((work / "stats.json").read_text())
    stats["rank_sha256"] = [(work / f"rank{r}.sha256").read_text() for r in range(cfg.train.processes)]
    shutil.rmtree(d / "adapter", ignore_errors=True)
    os.replace(work / "adapter", d / "adapter")
    shutil.rmtree(work, ignore_errors=True)
    return stats
