"""`dry_run=true`: what a run would do, checked without loading weights or touching the network."""

from __future__ import annotations


def plan(cfg) -> str:
    s, j, sel, t = cfg.sampling, cfg.judge, cfg.selection, cfg.train
    prompts = cfg.data.prompts_per_iteration or "all"
    lines = [
        "selfreward plan (dry run: nothing loaded)",
        f"  model      {cfg.model.path} (init={cfg.model.init}, dtype={cfg.model.dtype})",
        f"  backend    {cfg.backend} on {cfg.device}",
        f"  data       train={cfg.data.train_prompts or 'built-in ' + cfg.data.task}, eval={cfg.data.eval_prompts or 'built-in held-out'}",
        f"  iterations {cfg.iterations}: per iteration {prompts} prompts",
        f"  sample     K={s.k}, temperature={s.temperature}, top_p={s.top_p}, max_new_tokens={s.max_new_tokens}",
        f"  judge      {j.template}, scores {list(j.scores)}, scoring={j.scoring}, n={j.n}",
        f"  select     {sel.strategy}, top_k={sel.top_k}, threshold={sel.threshold}, min_margin={sel.min_margin}",
        f"  train      LoRA r={t.lora.r} on {list(t.lora.target_modules)}, lr={t.lr}, steps={t.steps}, merge={t.merge}",
        f"  eval       K={cfg.eval.k} sampled + greedy on held-out prompts",
    ]
    return "\n".join(lines)
