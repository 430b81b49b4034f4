"""Sampling stage: K candidates per prompt from the policy, with their log-probs."""

from __future__ import annotations

from selfreward.prompting import chat, cut
from selfreward.verifier import extract_answer, is_correct


def sample(backend, prompts: list[dict], cfg, seed: int) -> list[dict]:
    """One row per candidate: prompt_id, prompt, cand_idx, text, seed, answer, logprob, entropy, correct.

    `correct` is the verifier's verdict where the prompt has an answer: it is recorded
    for measurement only; no selection strategy reads it.
    """
    inputs = [chat(backend.tokenizer, p["prompt"], cfg.system_prompt, cfg.few_shot) for p in prompts]
    outs = backend.generate(inputs, cfg.k, cfg.temperature, cfg.top_p, cfg.top_k, cfg.max_new_tokens, seed,
                            batch_size=cfg.batch_size, desc="sample")
    outs = [[cut(t, cfg.stop) for t in texts] for texts in outs]
    seeds = backend.last_seeds
    flat_in = [inputs[i] for i, texts in enumerate(outs) for _ in texts]
    flat_out = [t for texts in outs for t in texts]
    stats = backend.logprob(flat_in, flat_out, batch_size=cfg.batch_size)
    rows, n = [], 0
    for i, (p, texts) in enumerate(zip(prompts, outs)):
        for j, text in enumerate(texts):
            lp, ent = stats[n]
            n += 1
            rows.append({
                "prompt_id": p["id"], "prompt": p["prompt"], "cand_idx": j, "text": text, "seed": seeds[i],
                "answer": p.get("answer"), "final": extract_answer(text), "logprob": lp, "entropy": ent,
                "correct": is_correct(text, p.get("answer")),
                **{k: p[k] for k in ("tests", "entry_point") if k in p},
            })
    return rows
