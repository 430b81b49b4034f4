"""Evaluation stage: held-out prompts, never trained on. The verifier measures; it never selects."""

from __future__ import annotations

from selfreward.embed import mean_pairwise_cosine
from selfreward.judge import judge
from selfreward.metrics import diversity_report, judge_report, mean
from selfreward.prompting import chat, cut
from selfreward.verifier import extract_answer, is_correct


def evaluate(backend, prompts: list[dict], cfg, seed: int, reference=None) -> tuple[list[dict], dict]:
    """Sampled and greedy accuracy on held-out prompts, and the judge's agreement with the verifier on them.

    With a `reference` backend (the seed), also KL(policy || seed) per token, estimated on the policy's samples.
    """
    s = cfg.sampling
    inputs = [chat(backend.tokenizer, p["prompt"], s.system_prompt, s.few_shot) for p in prompts]
    greedy = backend.generate(inputs, 1, 0.0, 1.0, 0, s.max_new_tokens, seed, batch_size=s.batch_size, desc="eval greedy")
    sampled = backend.generate(inputs, cfg.eval.k, cfg.eval.temperature, cfg.eval.top_p, s.top_k, s.max_new_tokens,
                               seed + 1, batch_size=s.batch_size, desc="eval sample")
    greedy = [[cut(t, s.stop) for t in g] for g in greedy]
    sampled = [[cut(t, s.stop) for t in texts] for texts in sampled]
    rows = [
        {"prompt_id": p["id"], "prompt": p["prompt"], "cand_idx": j, "text": t, "answer": p.get("answer"),
         "final": extract_answer(t), "correct": is_correct(t, p.get("answer")), "greedy": g[0],
         "greedy_correct": is_correct(g[0], p.get("answer")), **{k: p[k] for k in ("tests", "entry_point") if k in p}}
        for p, texts, g in zip(prompts, sampled, greedy) for j, t in enumerate(texts)
    ]
    metrics = {
        "eval/accuracy": mean(float(r["correct"]) for r in rows if r["correct"] is not None),
        "eval/greedy_accuracy": mean(float(r["greedy_correct"]) for r in rows if r["cand_idx"] == 0 and r["greedy_correct"] is not None),
        "eval/mean_length": mean(len(r["text"]) for r in rows),
        **diversity_report(rows),
    }
    if reference is not None:
        flat_in = [inputs[i] for i, texts in enumerate(sampled) for _ in texts]
        flat_out = [t for texts in sampled for t in texts]
        lp = backend.logprob(flat_in, flat_out, batch_size=s.batch_size, desc="eval logprob")
        ref = reference.logprob(flat_in, flat_out, batch_size=s.batch_size, desc="eval seed logprob")
        metrics["collapse/kl_to_seed"] = mean(a[0] - b[0] for a, b in zip(lp, ref))
    if cfg.eval.embeddings and (cos := mean_pairwise_cosine(rows)) is not None:
        metrics["diversity/embedding_cosine"] = cos
    if cfg.eval.judge:
        judgments = judge(backend, rows, cfg.judge, seed + 2, s.system_prompt, desc="eval judge")
        for r, j in zip(rows, judgments):
            r["score"] = j["score"]
        metrics.update(judge_report(rows, judgments, cfg.judge.accept))
    return rows, metrics
