"""The self-rewarding loop: evaluate the seed, then per iteration sample -> judge -> select -> train -> evaluate."""

from __future__ import annotations

import os
import random
import shutil
import time
from pathlib import Path

import torch

from selfreward import data
from selfreward.artifacts import iter_dir, write_json, write_jsonl
from selfreward.backends.hf import HFBackend, context_length, load
from selfreward.evaluate import evaluate
from selfreward.judge import judge
from selfreward.metrics import judge_report, mean
from selfreward.select import select
from selfreward.sample import sample
from selfreward.tracking import Tracker
from selfreward.train import train_lora


def run(cfg, run_dir: Path, config_dict: dict) -> list[dict]:
    """Run the whole loop in `run_dir`; returns the per-iteration metric rows."""
    torch.manual_seed(cfg.seed)
    model_path = resolve_model(cfg)
    policy, tokenizer = load_policy(cfg, model_path)
    backend = HFBackend(policy, tokenizer)
    train_pool, eval_prompts, data_stats = data.load(cfg.data, run_dir, fits(cfg, tokenizer, context_length(policy)))
    replay = replay_examples(cfg, tokenizer)
    tracker = Tracker(cfg.tracking, run_dir, config_dict)

    t0 = time.time()
    metrics, eval_rows = evaluate(backend, eval_prompts, cfg, seed=cfg.seed)
    write_jsonl(iter_dir(run_dir, 0) / "eval.jsonl", eval_rows)
    tracker.log({"iteration": 0, **data_stats, **metrics, "time/eval_s": time.time() - t0}, examples(eval_rows, cfg))

    winners: list[dict] = []
    for i in range(1, cfg.iterations + 1):
        d, seed, times = iter_dir(run_dir, i), cfg.seed * 1000 + i, {}
        t = time.time()
        prompts = data.for_iteration(train_pool, i, cfg.data.prompts_per_iteration)
        candidates = sample(backend, prompts, cfg.sampling, seed)
        write_jsonl(d / "candidates.jsonl", candidates)
        times["time/sample_s"], t = time.time() - t, time.time()

        judgments = judge(backend, candidates, cfg.judge, seed, cfg.sampling.system_prompt)
        write_jsonl(d / "judgments.jsonl", judgments)
        times["time/judge_s"], t = time.time() - t, time.time()

        scores = {(j["prompt_id"], j["cand_idx"]): j["score"] for j in judgments}
        selected, pairs, select_stats = select(candidates, scores, cfg.selection, seed)
        write_jsonl(d / "selected.jsonl", selected)
        write_jsonl(d / "pairs.jsonl", pairs)
        winners = winners + selected if cfg.train.data == "accumulate" else selected

        start = load_policy(cfg, model_path)[0] if cfg.train.start_from == "seed" else backend.model
        trained, train_stats = train_lora(start, tokenizer, winners, replay, cfg.train, seed, cfg.sampling.system_prompt)
        save_adapter(trained, d / "adapter")
        backend.set_model(trained.merge_and_unload() if cfg.train.merge else trained)
        times["time/train_s"], t = time.time() - t, time.time()

        metrics, eval_rows = evaluate(backend, eval_prompts, cfg, seed=cfg.seed)
        write_jsonl(d / "eval.jsonl", eval_rows)
        times["time/eval_s"] = time.time() - t
        row = {
            "iteration": i, **metrics, **select_stats, **times,
            "sample/accuracy": mean(float(c["correct"]) for c in candidates if c["correct"] is not None),
            "sample/mean_logprob": mean(c["logprob"] for c in candidates),
            "sample/entropy": mean(c["entropy"] for c in candidates),
            **judge_report(candidates, judgments, cfg.judge.accept, prefix="judge/train_"),
            "judge/parse_fail_rate": judge_report(candidates, judgments, cfg.judge.accept)["judge/parse_fail_rate"],
            "train/loss": train_stats["loss_last"], "train/steps": train_stats["steps"],
            "train/skipped_steps": train_stats["skipped_steps"], "train/tokens": train_stats["tokens"],
            "time/iteration_s": sum(times.values()),
        }
        row.update(collapse(row, tracker.rows[0]))
        write_json(d / "metrics.json", row)
        tracker.log(row, examples(candidates, cfg, scores, selected))
    tracker.finish()
    return tracker.rows


def collapse(row: dict, seed_row: dict) -> dict:
    """Diversity relative to the seed's (iteration 0): values well below 1 mean the policy is collapsing."""
    out = {}
    for key, value in row.items():
        base = seed_row.get(key)
        if key.startswith("diversity/") and isinstance(value, float) and isinstance(base, float) and base > 0:
            out["collapse/" + key.split("/", 1)[1]] = value / base
    return out


def fits(cfg, tokenizer, context: int):
    """`fits(prompt) -> reason | None`: the prompt, its generation budget and the judge prompt built from it must fit."""
    from selfreward.prompting import chat, render_judge

    s, j = cfg.sampling, cfg.judge

    def n_tokens(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False).input_ids)

    def check(prompt: str) -> str | None:
        p = n_tokens(chat(tokenizer, prompt, s.system_prompt, s.few_shot))
        if p + s.max_new_tokens > context:
            return f"prompt is {p} tokens; with sampling.max_new_tokens={s.max_new_tokens} it exceeds the context ({context})"
        jp = n_tokens(chat(tokenizer, render_judge(j.template, prompt, ""), s.system_prompt))
        if jp + s.max_new_tokens + j.max_new_tokens > context:
            return (f"judge prompt is {jp} tokens; with the response ({s.max_new_tokens}) and judge.max_new_tokens "
                    f"({j.max_new_tokens}) it exceeds the context ({context})")
        return None

    return check


def resolve_model(cfg) -> str:
    """The model directory: the built-in seed (built or fetched from cache) or the configured path."""
    if cfg.model.path == "builtin":
        from selfreward.tasks.seed import ensure_seed

        return str(ensure_seed(cfg.model.seed))
    return cfg.model.path


def load_policy(cfg, path: str):
    m = cfg.model
    return load(path, init=m.init, dtype=m.dtype, device=cfg.device, gguf_file=m.gguf_file,
                trust_remote_code=m.trust_remote_code)


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
