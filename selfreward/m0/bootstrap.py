"""M0 for any model with a verifier (`model.bootstrap.enabled=true`, or `selfreward m0 --out DIR`): the
Self-Rewarding recipe's seed, built from the base model's own verified samples.

Yuan et al. build M0 from a base model with instruction data and evaluation (LLM-as-a-Judge) data. Here both come
from the model itself, on a *seed split*: prompts taken from the end of the training pool, which the loop then never
sees, and apart from the held-out prompts. The base model samples `k` answers per seed prompt, the verifier labels
them, and each prompt with both right and wrong answers gives balanced judge examples: the run's own rubric, then the
score prefix, then the top score for a right answer and the lowest for a wrong one. This is the score-only judge
(`judge.rubric.reasoning_regex=''`), which the verifier can label without writing a worked check. LoRA training on
them teaches the judge; `instruction=true` also trains on the verified right answers (a separate switch, so the
two effects can be told apart). A share of the seed prompts (`holdout`) is kept out of training to measure the judge
before and after (`judge/auc_within`, as the loop's preflight reads it).

    selfreward m0 --out DIR +experiment=gemma3_270m_loop     # then: model.path=DIR (selfreward/m0/__main__.py)
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from selfreward import scorers
from selfreward.backends.hf import HFBackend
from selfreward.backends.load import save_model
from selfreward.observe.metrics import judge_report, mean
from selfreward.prompting import chat, render_judge
from selfreward.records import Candidate, Prompt, PromptFormat, by_prompt
from selfreward.rng import derive
from selfreward.sample import sample
from selfreward.schema import ConfigError, opt, require
from selfreward.scorers.verifier import settings_of
from selfreward.train.fit import fit
from selfreward.train.sft import Example, collate, encode, loss, mixture
from selfreward.train.stage import with_adapter

STREAM = 99  # the bootstrap's seed stream: derive(cfg.seed, STREAM, ...), apart from every iteration's


@dataclass
class BootstrapConfig:
    enabled: bool = opt(False, "build M0 from model.path on a seed split before the loop (run dir m0/) and run on it")
    prompts: int = opt(256, "seed-split prompts, taken from the end of the training pool (the loop never sees them)")
    k: int = opt(8, "samples per seed prompt")
    pairs_per_prompt: int = opt(2, "right/wrong answer pairs per prompt that has both (balanced judge examples)")
    instruction: bool = opt(False, "also train on the verified right answers (instruction data)")
    holdout: float = opt(0.25, "share of the seed prompts kept out of training to measure the judge before/after")
    epochs: float = opt(2.0, "passes over the examples")
    batch_size: int = opt(16, "examples per step")
    lr: float = opt(3e-4, "LoRA learning rate")

    def __post_init__(self):
        require(self.prompts >= 4 and self.k >= 2 and self.pairs_per_prompt >= 1,
                "model.bootstrap needs prompts >= 4, k >= 2 and pairs_per_prompt >= 1")
        require(0.0 < self.holdout < 1.0 and self.epochs > 0 and self.batch_size >= 1 and self.lr > 0,
                "model.bootstrap needs 0 < holdout < 1, epochs > 0, batch_size >= 1 and lr > 0")


def check(cfg) -> None:
    """What the recipe needs from the run's config, before any compute."""
    r = getattr(cfg.judge, "rubric", None)
    if r is None or r.reasoning_regex:
        raise ConfigError("model.bootstrap trains the score-only rubric judge: use judge=rubric with "
                          "judge.rubric.reasoning_regex='' (the verifier labels answers; it cannot write a worked "
                          "check)")


def split(train: list[Prompt], cfg, own: list[Prompt] | None = None) -> tuple[list[Prompt], list[Prompt]]:
    """(the loop's training pool, the seed split). A built-in task with a seed part of its problem space gives it as
    `own` (disjoint from training and evaluation by construction, whatever the pool sizes); otherwise the seed split
    is the last `model.bootstrap.prompts` of the pool, which the loop's pool then leaves out."""
    if own is not None:
        texts = {p.prompt for p in own}
        return [p for p in train if p.prompt not in texts], own
    n = cfg.model.bootstrap.prompts
    if n >= len(train):
        raise ConfigError(f"model.bootstrap.prompts={n} leaves no training prompt (the pool has {len(train)}); "
                          "raise data.n_train or give more training prompts")
    return train[:-n], train[-n:]


def exclude_seed(model_path: str, train: list[Prompt], evals: list[Prompt]) -> tuple[list[Prompt], list[Prompt], int]:
    """Leave out of training and evaluation every prompt an M0 at `model_path` was built on (its bootstrap.json
    lists them), by prompt text: a control run on `model.path=RUN/m0` never trains or evaluates on M0's seed split."""
    info = Path(model_path) / "bootstrap.json"
    seen = set(json.loads(info.read_text()).get("seed_prompt_texts", [])) if info.is_file() else set()
    if not seen:
        return train, evals, 0
    kept_t, kept_e = [p for p in train if p.prompt not in seen], [p for p in evals if p.prompt not in seen]
    return kept_t, kept_e, len(train) + len(evals) - len(kept_t) - len(kept_e)


def score_token(tokenizer, score: int) -> int:
    ids = tokenizer(str(score), add_special_tokens=False).input_ids
    if len(ids) != 1:
        raise ConfigError(f"score {score} is {len(ids)} tokens for this tokenizer; the score-only judge needs one")
    return ids[0]


def judge_examples(candidates: list[Candidate], cfg, tokenizer, seed: int) -> list[Example]:
    """Balanced judge examples: for each prompt with right and wrong answers, up to `pairs_per_prompt` of each (distinct
    texts), as the score-only judge reads them (rubric, score prefix -> score token)."""
    b, r, fmt = cfg.model.bootstrap, cfg.judge.rubric, PromptFormat.of(cfg.sampling)
    hi, lo = score_token(tokenizer, max(cfg.judge.scores)), score_token(tokenizer, min(cfg.judge.scores))
    rng = random.Random(seed)
    out = []
    for cands in by_prompt(candidates).values():
        right = list({c.text: c for c in cands if c.correct}.values())
        wrong = list({c.text: c for c in cands if c.correct is False}.values())
        m = min(b.pairs_per_prompt, len(right), len(wrong))
        for c, target in [(c, hi) for c in rng.sample(right, m)] + [(c, lo) for c in rng.sample(wrong, m)]:
            text = chat(tokenizer, render_judge(r.template, c.prompt, c.text), fmt.judge)
            ids = tokenizer(text + r.score_prefix, add_special_tokens=False).input_ids
            out.append(Example(ids=ids + [target], n_prompt=len(ids)))
    return out


def instruction_examples(candidates: list[Candidate], cfg, tokenizer) -> list[Example]:
    """One verified right answer per prompt (the first), as the sampler formatted the prompt."""
    firsts = [next((c for c in cands if c.correct), None) for cands in by_prompt(candidates).values()]
    fmt = PromptFormat.of(cfg.sampling)
    return [encode(tokenizer, c.prompt, c.text, fmt=fmt) for c in firsts if c is not None]


def judge_figures(backend, candidates: list[Candidate], cfg, seed: int) -> dict:
    judgments = scorers.score(backend, candidates, cfg.judge, seed, fmt=PromptFormat.of(cfg.sampling),
                              desc="bootstrap judge")
    report = judge_report(candidates, judgments, cfg.judge.accept)
    return {k: report.get(f"judge/{k}", math.nan) for k in ("auc_within", "auc", "agreement", "saturation")}


def build(policy, tokenizer, prompts: list[Prompt], cfg, out: Path, progress: bool = True) -> dict:
    """Build M0 from `policy` on the seed split `prompts` and save it as a model directory at `out` (atomically);
    returns the recipe's figures (also in out/bootstrap.json)."""
    check(cfg)
    b, t0 = cfg.model.bootstrap, time.time()
    n_hold = max(1, round(len(prompts) * b.holdout))
    held, used = prompts[:n_hold], prompts[n_hold:]
    backend = HFBackend(policy, tokenizer, progress)
    sampling = OmegaConf.merge(cfg.sampling, {"k": b.k})
    cands = sample(backend, prompts, sampling, derive(cfg.seed, STREAM), settings_of(cfg.judge))
    held_ids = {p.id for p in held}
    held_cands = [c for c in cands if c.prompt_id in held_ids]
    fit_cands = [c for c in cands if c.prompt_id not in held_ids]
    t_sample = time.time() - t0
    base = judge_figures(backend, held_cands, cfg, derive(cfg.seed, STREAM, 1))
    judge = judge_examples(fit_cands, cfg, tokenizer, derive(cfg.seed, STREAM, 2))
    if not judge:
        raise ConfigError(f"model.bootstrap: no seed prompt of {len(used)} got both a right and a wrong answer in "
                          f"k={b.k} samples, so there is no judge example; raise model.bootstrap.k or prompts")
    instruct = instruction_examples(fit_cands, cfg, tokenizer) if b.instruction else []
    examples = judge + instruct
    model = with_adapter(policy, cfg.train.lora)
    steps = max(1, math.ceil(b.epochs * len(examples) / b.batch_size))
    draw = mixture(examples, [], b.batch_size, 0.0, derive(cfg.seed, STREAM, 3))
    t1 = time.time()
    stats = fit(model, draw, collate, loss, steps, b.lr, tokenizer.pad_token_id, progress=progress,
                desc="bootstrap M0")
    t_train = time.time() - t1
    m0 = model.merge_and_unload()
    backend.update(m0)
    after = judge_figures(backend, held_cands, cfg, derive(cfg.seed, STREAM, 1))
    # the generator after judge training, on the held-back prompts: judge examples alone teach the score tokens
    # everywhere (measured on Gemma 3 270M: every answer became "55151"), which a judge figure would not show
    m0_cands = sample(backend, held, sampling, derive(cfg.seed, STREAM, 4), settings_of(cfg.judge))
    gen = {"base": mean(float(c.correct) for c in held_cands if c.correct is not None),
           "m0": mean(float(c.correct) for c in m0_cands if c.correct is not None)}
    figures = {"seed_prompts": len(prompts), "holdout_prompts": n_hold, "k": b.k,
               "sample/accuracy": mean(float(c.correct) for c in cands if c.correct is not None),
               "base/sample/accuracy_holdout": gen["base"], "m0/sample/accuracy_holdout": gen["m0"],
               "judge_examples": len(judge), "judge_examples_right": len(judge) // 2,
               "instruction_examples": len(instruct), "steps": stats["steps"], "loss_first": stats["loss_first"],
               "loss_last": stats["loss_last"], **{f"base/judge/{k}": v for k, v in base.items()},
               **{f"m0/judge/{k}": v for k, v in after.items()},
               "time/sample_s": t_sample, "time/train_s": t_train, "time/total_s": time.time() - t0,
               "base_model": cfg.model.path, "recipe": OmegaConf.to_container(OmegaConf.structured(b)),
               "seed_prompt_texts": [p.prompt for p in prompts]}
    save_model(m0, tokenizer, out, extra={"bootstrap.json": figures})
    print(f"[selfreward] M0 built at {out}: judge/auc_within on {n_hold} held-back seed prompts "
          f"{base['auc_within']:.3f} (base) -> {after['auc_within']:.3f} (M0); sampled accuracy there "
          f"{gen['base']:.3f} -> {gen['m0']:.3f}; {len(judge)} judge examples, {len(instruct)} instruction examples, "
          f"{figures['time/total_s']:.0f}s", flush=True)
    if gen["m0"] < gen["base"] - 0.05:
        print(f"[selfreward] WARNING M0's generator lost accuracy in judge training ({gen['base']:.3f} -> "
              f"{gen['m0']:.3f} on the held-back seed prompts): add instruction data "
              "(model.bootstrap.instruction=true) or lower model.bootstrap.lr / epochs", flush=True)
    return figures


def ensure(run_dir: Path, cfg, policy, tokenizer, prompts: list[Prompt]) -> tuple[str, dict]:
    """The run's M0 (run_dir/m0): built now from `policy`, or the one an earlier start of this run built."""
    out = Path(run_dir) / "m0"
    done = out / "bootstrap.json"
    if done.is_file():
        return str(out), json.loads(done.read_text())
    return str(out), build(policy, tokenizer, prompts, cfg, out)
