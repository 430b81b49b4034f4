"""Sampling stage: K candidates per prompt from the policy, with their log-probs."""

from __future__ import annotations

from selfreward.prompting import chat, cut
from selfreward.records import Candidate, Prompt, PromptFormat
from selfreward.scorers.verifier import VerifierSettings, extract_answer, label


def sample(backend, prompts: list[Prompt], cfg, seed: int,
           verifier: VerifierSettings | None = None) -> list[Candidate]:
    """K candidates per prompt (`cfg` is the `sampling` group). `correct` is the verifier's verdict where the prompt
    has an answer or tests (`verifier`: the run's settings, as `verifier.settings_of(cfg.judge)` gives them): recorded
    for measurement only; no selection strategy reads it."""
    v = verifier or VerifierSettings()
    inputs = [chat(backend.tokenizer, p.prompt, PromptFormat.of(cfg)) for p in prompts]
    outs = backend.generate(inputs, cfg.k, cfg.temperature, cfg.top_p, cfg.top_k, cfg.max_new_tokens, seed,
                            batch_size=cfg.batch_size, desc="sample", stop=cfg.stop)
    flat = [(p, x, j, c) for p, x, comps in zip(prompts, inputs, outs) for j, c in enumerate(comps)]
    texts = [cut(c.text, cfg.stop) for _, _, _, c in flat]
    stats = [(c.logprob, c.entropy) for _, _, _, c in flat]
    # a response the backend could not cut on a token boundary: its log-prob is taken teacher-forced
    shortened = [n for n, ((_, _, _, c), t) in enumerate(zip(flat, texts)) if t != c.text]
    if shortened:
        redo = backend.logprob([flat[n][1] for n in shortened], [texts[n] for n in shortened],
                               batch_size=cfg.batch_size)
        for n, st in zip(shortened, redo):
            stats[n] = st
    rows = [Candidate(prompt_id=p.id, prompt=p.prompt, cand_idx=j, text=t, seed=c.seed, answer=p.answer,
                      final=extract_answer(t, v.answer_regex), logprob=lp, entropy=ent, correct=None, tests=p.tests,
                      entry_point=p.entry_point, prefix=p.prefix)
            for (p, _, j, c), t, (lp, ent) in zip(flat, texts, stats)]
    for row, ok in zip(rows, label(rows, v)):
        row.correct = ok
    return rows
