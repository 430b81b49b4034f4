"""Evaluation stage: held-out prompts, never trained on. The verifier measures; it never selects."""

from __future__ import annotations

from dataclasses import replace

from selfreward import scorers
from selfreward.observe.embed import mean_pairwise_cosine
from selfreward.observe.metrics import diversity_report, judge_report, kendall_tau, kendall_within, mean
from selfreward.prompting import chat, cut
from selfreward.records import EvalSample, Prompt, PromptFormat
from selfreward.rng import derive
from selfreward.scorers.verifier import extract_answer, label, settings_of


def evaluate(backend, prompts: list[Prompt], cfg, reference=None,
             previous: list[EvalSample] | None = None) -> tuple[list[EvalSample], dict]:
    """Sampled and greedy accuracy on held-out prompts, and the judge's agreement with the verifier on them.

    With a `reference` backend (M0), also KL(policy || M0) per token, estimated on the policy's samples. With
    the `previous` iteration's judged held-out samples, also `judge/consistency`: how this judge ranks each prompt's
    samples against how the previous judge did, Kendall tau within a prompt averaged over prompts (CREAM:
    self-rewarding gains fade as the judge's bias accumulates); its noise floor is `judge/retest_tau`, the same judge
    twice under another seed (measured for a sampled judge, or with eval.retest=true; a greedy judge's floor is 1).
    """
    s, v, fmt = cfg.sampling, settings_of(cfg.judge), PromptFormat.of(cfg.sampling)
    inputs = [chat(backend.tokenizer, p.prompt, fmt) for p in prompts]
    greedy = backend.generate(inputs, 1, 0.0, 1.0, 0, s.max_new_tokens, derive(cfg.seed, 0), batch_size=s.batch_size,
                              desc="eval greedy", stop=s.stop)
    sampled = backend.generate(inputs, cfg.eval.k, cfg.eval.temperature, cfg.eval.top_p, s.top_k, s.max_new_tokens,
                               derive(cfg.seed, 1), batch_size=s.batch_size, desc="eval sample", stop=s.stop)
    rows = []
    for p, comps, g in zip(prompts, sampled, greedy):
        for j, t in enumerate(cut(c.text, s.stop) for c in comps):
            rows.append(EvalSample(prompt_id=p.id, prompt=p.prompt, cand_idx=j, text=t, answer=p.answer,
                                   final=extract_answer(t, v.answer_regex), correct=None, greedy=cut(g[0].text, s.stop),
                                   greedy_correct=None, tests=p.tests, entry_point=p.entry_point, prefix=p.prefix))
    greedy_rows = [replace(r, text=r.greedy) for r in rows if r.cand_idx == 0]
    greedy_ok = {r.prompt_id: ok for r, ok in zip(greedy_rows, label(greedy_rows, v))}
    for r, ok in zip(rows, label(rows, v)):
        r.correct, r.greedy_correct = ok, greedy_ok[r.prompt_id]
    metrics = {
        "eval/accuracy": mean(float(r.correct) for r in rows if r.correct is not None),
        "eval/greedy_accuracy": mean(float(r.greedy_correct) for r in rows
                                     if r.cand_idx == 0 and r.greedy_correct is not None),
        "eval/mean_length": mean(len(r.text) for r in rows),
        **diversity_report(rows),
    }
    if reference is not None:
        flat_in = [x for x, comps in zip(inputs, sampled) for _ in comps]
        texts = [r.text for r in rows]
        # both teacher-forced, on the same tokens (the sampler's own figures stop at EOS and may come from another
        # engine's precision)
        policy = backend.logprob(flat_in, texts, batch_size=s.batch_size, desc="eval logprob")
        ref = reference.logprob(flat_in, texts, batch_size=s.batch_size, desc="eval seed logprob")
        metrics["collapse/kl_to_seed"] = mean(a[0] - b[0] for a, b in zip(policy, ref))
    if cfg.eval.embeddings and (cos := mean_pairwise_cosine(rows)) is not None:
        metrics["diversity/embedding_cosine"] = cos
    if cfg.eval.judge:
        judgments = scorers.score(backend, rows, cfg.judge, derive(cfg.seed, 2), fmt=fmt,
                                  desc="eval judge")
        for r, j in zip(rows, judgments):
            r.score = j.score
        metrics.update(judge_report(rows, judgments, cfg.judge.accept))
        if retested(cfg):
            again = scorers.score(backend, rows, cfg.judge, derive(cfg.seed, 3), fmt=fmt,
                                  desc="eval judge (retest)")
            metrics["judge/retest_tau"] = kendall_within([r.prompt_id for r in rows], [r.score for r in rows],
                                                         [j.score for j in again])
        if previous:
            again = scorers.score(backend, previous, cfg.judge, derive(cfg.seed, 2), fmt=fmt,
                                  desc="eval judge (previous samples)")
            before, now = [r.score for r in previous], [j.score for j in again]
            metrics["judge/consistency"] = kendall_within([r.prompt_id for r in previous], before, now)
            metrics["judge/consistency_pooled"] = kendall_tau(before, now)
    return rows, metrics


def retested(cfg) -> bool:
    """Whether evaluation judges its held-out samples twice (`judge/retest_tau`): eval.retest, or by default only a
    sampled judge (a greedy one repeats itself)."""
    return cfg.eval.retest if cfg.eval.retest is not None else scorers.sampled(cfg.judge)
