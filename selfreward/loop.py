"""The self-rewarding loop: evaluate M0, then per iteration sample -> judge -> select -> train -> evaluate.

Each stage is one call into its module; `IterDir` makes each resumable (a completed stage is read back, a partial
one continues from its last shard), and every random stream derives from `cfg.seed` (`rng.derive`).
"""

from __future__ import annotations

import copy
import math
from functools import partial
from pathlib import Path

import torch
from omegaconf import OmegaConf

from selfreward import data, preferences, scorers
from selfreward.backends.hf import HFBackend, context_length
from selfreward.backends.load import load_policy, make_backend
from selfreward.backends.precision import chosen, dtype_name, pin
from selfreward.evaluate import evaluate
from selfreward.m0 import bootstrap, builtin, resolve
from selfreward.observe.alerts import check as check_alerts
from selfreward.observe.alerts import measurable, preflight, stops_before_training
from selfreward.observe.metrics import collapse, iteration_report
from selfreward.observe.tracking import Tracker, examples
from selfreward.records import Candidate, EvalSample, Judgment, PromptFormat
from selfreward.rng import derive
from selfreward.rundir.artifacts import IterDir, clean_temporaries, write_json, write_jsonl
from selfreward.rundir.runinfo import check_or_create, note, read_info
from selfreward.sample import sample
from selfreward.scorers.verifier import settings_of
from selfreward.select import select
from selfreward.train.stage import train_stage


def run(cfg, run_dir: Path) -> list[dict]:
    """Run the whole loop in `run_dir`, resuming any stage a previous run of the same config completed. Returns the
    per-iteration metric rows (row 0: M0)."""
    torch.manual_seed(cfg.seed)
    config = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    digest = check_or_create(run_dir, config, cfg.force_resume)
    clean_temporaries(run_dir)
    model_path = resolve(cfg)
    decide_dtype_once(cfg, run_dir)
    policy, tokenizer = load_policy(cfg, model_path)
    note(run_dir, precision={"dtype": dtype_name(policy), "auto": chosen()})
    cfg.model.dtype = dtype_name(policy)  # every later load (M0, training processes, vLLM) takes it as it is
    context = context_length(policy)
    train_pool, eval_prompts, data_stats = data.load(cfg.data, run_dir, data.context_check(cfg, tokenizer, context))
    prefs = preferences.load(cfg, run_dir, preferences.context_check(cfg, tokenizer, context))
    if why := measurable(cfg, eval_prompts, prefs):  # said before any compute
        print(f"[selfreward] WARNING {why}", flush=True)
    train_pool, eval_prompts, data_stats["data/seed_split_excluded"] = bootstrap.exclude_seed(
        model_path, train_pool, eval_prompts)  # an M0 given as model.path: its seed split stays out
    if cfg.model.bootstrap.enabled:  # M0 from the model's own verified samples on a seed split; the loop runs on it
        own = data.seed_pool(cfg.data, cfg.model.bootstrap.prompts)
        train_pool, seed_split = bootstrap.split(train_pool, cfg, own)
        model_path, boot = bootstrap.ensure(run_dir, cfg, policy, tokenizer, seed_split)
        policy, tokenizer = load_policy(cfg, model_path)
        data_stats.update({f"bootstrap/{k}": v for k, v in boot.items() if isinstance(v, (int, float))})
    backend = make_backend(cfg, model_path, policy, tokenizer)
    tracker = Tracker(cfg.tracking, run_dir, config)
    # M0, kept for KL and train.start_from=m0 (a copy: no second load)
    m0_model = copy.deepcopy(policy) if cfg.eval.kl or cfg.train.start_from == "m0" else None
    reference = HFBackend(m0_model, tokenizer, progress=False) if cfg.eval.kl else None
    replay = builtin.replay_rows(cfg)  # the built-in model's judge data, mixed into every training batch

    it = IterDir(run_dir, 0, digest)
    rows, ev = it.stage("eval", EvalSample, partial(evaluate, backend, eval_prompts, cfg))
    seconds = ev.pop("seconds")
    pref, pref_s = judge_preferences(it, backend, prefs, cfg)
    row = {"iteration": 0, **data_stats, **ev, **pref, "time/eval_s": seconds, "time/preferences_s": pref_s}
    alerts = check_alerts(row, cfg.alerts)
    tracker.preflight = preflight(row, alerts, cfg.alerts)
    tracker.log(row, examples(rows, cfg.tracking.table_rows), alerts)
    stop = stops_before_training(alerts, cfg.alerts)
    if stop:
        print(f"[selfreward] stopping before any training: the judge preflight {tracker.preflight['judge']} "
              "(alerts.early_stop=true)", flush=True)

    winners, pair_pool = [], []
    for i in range(1, 0 if stop else cfg.iterations + 1):
        it = IterDir(run_dir, i, digest)
        prompts = data.for_iteration(train_pool, i, cfg.data.prompts_per_iteration)
        shard = cfg.sampling.shard_prompts
        candidates, st_sample = it.sharded("candidates", Candidate, prompts, shard,
                                           partial(sample_shard, backend, cfg, i))
        judgments, st_judge = it.sharded("judgments", Judgment, candidates, shard * cfg.sampling.k,
                                         partial(judge_shard, backend, cfg, i))
        selected, pairs, select_stats = select(candidates, judgments, cfg.selection, derive(cfg.seed, i))
        write_jsonl(it.path / "selected.jsonl", selected)
        write_jsonl(it.path / "pairs.jsonl", pairs)
        keep_all = cfg.train.data == "accumulate"
        winners, pair_pool = (winners + selected, pair_pool + pairs) if keep_all else (selected, pairs)

        start = copy.deepcopy(m0_model) if cfg.train.start_from == "m0" else policy
        backend.pause()  # vLLM sleep mode: training gets the accelerator
        trained, st_train = train_stage(it, start, tokenizer, winners, pair_pool, cfg, derive(cfg.seed, i), model_path,
                                        replay)
        policy = trained.merge_and_unload() if cfg.train.merge else trained
        backend.update(policy, it.path / "adapter", i)

        rows, ev = it.stage("eval", EvalSample, partial(evaluate, backend, eval_prompts, cfg, reference, rows))
        pref, pref_s = judge_preferences(it, backend, prefs, cfg)
        times = {"time/sample_s": st_sample["seconds"], "time/judge_s": st_judge["seconds"],
                 "time/train_s": st_train["seconds"], "time/eval_s": ev.pop("seconds"), "time/preferences_s": pref_s}
        row = {"iteration": i, **ev, **pref, **select_stats, **times, "time/iteration_s": sum(times.values()),
               **{k: v for k, v in data_stats.items() if k.startswith("contamination/")},
               **iteration_report(candidates, judgments, pairs, st_train, cfg.judge.accept)}
        # judgments that ran without the grammar, over the iteration (training candidates and evaluation)
        row["judge/unconstrained"] = row["judge/train_unconstrained"] + ev.get("judge/unconstrained", 0)
        row.update(collapse(row, tracker.rows[0]))
        write_json(it.path / "metrics.json", row)
        alerts = check_alerts(row, cfg.alerts)
        tracker.log(row, examples(candidates, cfg.tracking.table_rows, judgments, selected), alerts,
                    {"judge/score_hist": [j.score for j in judgments if not math.isnan(j.score)]})
        if alerts and cfg.alerts.early_stop:
            print(f"[selfreward] stopping early after iteration {i} (alerts.early_stop=true)", flush=True)
            break
    tracker.finish()
    return tracker.rows


def decide_dtype_once(cfg, run_dir: Path) -> None:
    """A run decides `model.dtype=auto` once: a resumed run takes the choice run.json recorded, never a new
    measurement (a busy moment could pick the other dtype and train a different adapter)."""
    recorded = read_info(run_dir).get("precision", {})
    if str(cfg.model.dtype) == "auto" and recorded.get("auto"):
        pin(recorded["auto"])
        print(f"[selfreward] model.dtype=auto -> {recorded['dtype']} (recorded in run.json when the run started)",
              flush=True)


def judge_preferences(it: IterDir, backend, prefs: list, cfg) -> tuple[dict, float]:
    """The judge on the preference set (the iteration's `preferences` stage): its figures and seconds."""
    if not prefs:
        return {}, 0.0
    _, stats = it.stage("preferences", Judgment, partial(preferences.measure, backend, prefs, cfg, derive(cfg.seed, 4)))
    return {k: v for k, v in stats.items() if k != "seconds"}, stats["seconds"]


def sample_shard(backend, cfg, iteration: int, prompts: list, shard: int) -> list[Candidate]:
    return sample(backend, prompts, cfg.sampling, derive(cfg.seed, 0, iteration, shard), settings_of(cfg.judge))


def judge_shard(backend, cfg, iteration: int, candidates: list[Candidate], shard: int) -> list[Judgment]:
    """A shard's judgments, seeded as its sampling was."""
    return scorers.score(backend, candidates, cfg.judge, derive(cfg.seed, 0, iteration, shard),
                         fmt=PromptFormat.of(cfg.sampling))
