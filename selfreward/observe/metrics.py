"""Pure metric functions: judge quality against the verifier, diversity and collapse, reward hacking, contamination."""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict

from selfreward.records import Candidate, Judgment, Pair, by_prompt


def auc(scores: list[float], labels: list[bool]) -> float:
    """Probability that a random correct item outscores a random wrong one (ties count half); NaN if a class is
    empty."""
    pairs = [(s, y) for s, y in zip(scores, labels) if not math.isnan(s)]
    pos = [s for s, y in pairs if y]
    neg = [s for s, y in pairs if not y]
    if not pos or not neg:
        return math.nan
    # rank-based (Mann-Whitney) so it stays O(n log n)
    ranked = sorted(pairs, key=lambda t: t[0])
    rank_sum, i = 0.0, 0
    while i < len(ranked):
        j = i
        while j < len(ranked) and ranked[j][0] == ranked[i][0]:
            j += 1
        avg_rank = (i + j + 1) / 2  # 1-based average rank of the tie group
        rank_sum += avg_rank * sum(1 for t in ranked[i:j] if t[1])
        i = j
    return (rank_sum - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))


def auc_within(groups: list[str], scores: list[float], labels: list[bool]) -> float:
    """Mean AUC over groups (prompts) that hold both correct and wrong candidates: does the judge rank one prompt's
    candidates?"""
    by: dict[str, tuple[list, list]] = defaultdict(lambda: ([], []))
    for g, s, y in zip(groups, scores, labels):
        by[g][0].append(s)
        by[g][1].append(y)
    values = [auc(s, y) for s, y in by.values()]
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan


def kendall_tau(xs: list[float], ys: list[float]) -> float:
    """Kendall's tau-b between two scorings of the same items (ties allowed; NaN pairs left out): 1 = same order."""
    pairs = [(x, y) for x, y in zip(xs, ys) if x is not None and y is not None and not (math.isnan(x) or math.isnan(y))]
    concordant = discordant = ties_x = ties_y = 0
    for i, (x1, y1) in enumerate(pairs):
        for x2, y2 in pairs[i + 1 :]:
            dx, dy = x1 - x2, y1 - y2
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif (dx > 0) == (dy > 0):
                concordant += 1
            else:
                discordant += 1
    n = concordant + discordant
    denominator = math.sqrt((n + ties_x) * (n + ties_y))
    return (concordant - discordant) / denominator if denominator else math.nan


def kendall_within(groups: list[str], xs: list[float], ys: list[float]) -> float:
    """Kendall's tau between two scorings computed within each group (a prompt's samples: the order selection
    depends on) and averaged over the groups where it is defined (not all tied); NaN if none is."""
    by: dict[str, tuple[list, list]] = defaultdict(lambda: ([], []))
    for g, x, y in zip(groups, xs, ys):
        by[g][0].append(x)
        by[g][1].append(y)
    return mean(kendall_tau(x, y) for x, y in by.values())


def agreement(scores: list[float], labels: list[bool], accept: float) -> float:
    """Fraction of judgments whose verdict (score >= accept) matches the verifier."""
    pairs = [(s >= accept) == y for s, y in zip(scores, labels) if not math.isnan(s)]
    return sum(pairs) / len(pairs) if pairs else math.nan


def mean(values) -> float:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return sum(values) / len(values) if values else math.nan


def judge_report(candidates: list, judgments: list[Judgment], accept: float, prefix: str = "judge/") -> dict:
    """Judge figures for judged candidates: parse failures, decodings that ran without the judge's grammar (vLLM,
    after retries: should be 0), saturation, and (with a verifier) agreement and AUCs."""
    score = {j.key: j.score for j in judgments}
    fails = sum(j.parse_fail for j in judgments)
    tries = sum(j.parse_fail + (0 if math.isnan(j.score) else 1) for j in judgments)
    by = [[score.get(c.key, math.nan) for c in cands] for cands in by_prompt(candidates).values()]
    saturated = [len({round(s, 6) for s in v}) == 1 for v in by if len(v) > 1 and not any(map(math.isnan, v))]
    out = {
        f"{prefix}parse_fail_rate": fails / tries if tries else 0.0,
        f"{prefix}unconstrained": sum(j.unconstrained or 0 for j in judgments),
        f"{prefix}mean_score": mean(score.values()),
        f"{prefix}saturation": sum(saturated) / len(saturated) if saturated else math.nan,
    }
    if any(j.comparisons is not None for j in judgments):  # pairwise: each pair is counted once per side
        played = sum(j.comparisons for j in judgments)
        out[f"{prefix}position_disagreement"] = sum(j.disagree for j in judgments) / played if played else math.nan
        out[f"{prefix}pairs_judged"] = played // 2
    labelled = [c for c in candidates if c.correct is not None]
    if labelled:
        s = [score.get(c.key, math.nan) for c in labelled]
        y = [bool(c.correct) for c in labelled]
        out[f"{prefix}agreement"] = agreement(s, y, accept)
        out[f"{prefix}auc"] = auc(s, y)
        out[f"{prefix}auc_within"] = auc_within([c.prompt_id for c in labelled], s, y)
    return out


def margin(candidates: list[Candidate], judgments: list[Judgment]) -> float:
    """Mean over prompts of the best minus the worst valid score (how much the judge separates K candidates)."""
    score = {j.key: j.score for j in judgments}
    spreads = []
    for cands in by_prompt(candidates).values():
        valid = [v for c in cands if not math.isnan(v := score.get(c.key, math.nan))]
        if valid:
            spreads.append(max(valid) - min(valid))
    return mean(spreads)


# ---- diversity and collapse -------------------------------------------------------------------

_TOKEN = re.compile(r"\w+|[^\w\s]")


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def ngrams(toks: list[str], n: int) -> list[tuple]:
    return [tuple(toks[i : i + n]) for i in range(len(toks) - n + 1)]


def distinct_n(texts: list[str], n: int) -> float:
    """Unique n-grams over all n-grams of the texts (1 = no repetition; small = collapsed)."""
    grams = [g for t in texts for g in ngrams(tokens(t), n)]
    return len(set(grams)) / len(grams) if grams else math.nan


def bleu(hyp: list[str], refs: list[list[str]], max_n: int = 4) -> float:
    """Sentence BLEU with epsilon smoothing, orders capped at the hypothesis length (short answers count)."""
    if not hyp or not refs:
        return math.nan
    orders = min(max_n, len(hyp))
    log_p = 0.0
    for n in range(1, orders + 1):
        h = Counter(ngrams(hyp, n))
        best = Counter()
        for r in refs:
            for g, c in Counter(ngrams(r, n)).items():
                best[g] = max(best[g], c)
        match = sum(min(c, best[g]) for g, c in h.items())
        log_p += math.log(max(match, 1e-9) / max(1, sum(h.values()))) / orders
    ref_len = min((len(r) for r in refs), key=lambda n: (abs(n - len(hyp)), n))
    bp = 1.0 if len(hyp) >= ref_len else math.exp(1 - ref_len / len(hyp))
    return bp * math.exp(log_p)


def self_bleu(texts: list[str]) -> float:
    """Mean BLEU of each text against the others (1 = identical, 0 = disjoint)."""
    toks = [tokens(t) for t in texts]
    scores = [bleu(t, toks[:i] + toks[i + 1 :]) for i, t in enumerate(toks)]
    return mean(scores)


def duplicate_rate(texts: list[str]) -> float:
    """Share of texts that repeat an earlier one exactly."""
    return 1 - len(set(texts)) / len(texts) if texts else math.nan


def entropy(values: list) -> float:
    """Shannon entropy (nats) of the empirical distribution of values."""
    counts = Counter(values)
    total = sum(counts.values())
    return -sum(c / total * math.log(c / total) for c in counts.values()) if total else math.nan


def diversity_report(rows: list[dict], prefix: str = "diversity/") -> dict:
    """Diversity of candidates: within each prompt's K (averaged) and over all candidates."""
    grouped = by_prompt(rows).values()
    groups = [[r.text for r in g] for g in grouped if len(g) > 1]
    finals = [[r.final for r in g] for g in grouped]
    texts = [r.text for r in rows]
    out = {f"{prefix}distinct_{n}": mean(distinct_n(g, n) for g in groups) for n in (1, 2, 3)}
    out.update({f"{prefix}distinct_{n}_all": distinct_n(texts, n) for n in (1, 2, 3)})
    out[f"{prefix}self_bleu"] = mean(self_bleu(g) for g in groups)
    out[f"{prefix}duplicate_rate"] = mean(duplicate_rate(g) for g in groups)
    out[f"{prefix}answer_entropy"] = mean(entropy(v) for v in finals if len(v) > 1)
    out[f"{prefix}opening_entropy"] = entropy([" ".join(tokens(t)[:3]) for t in texts])
    return out


# ---- reward hacking --------------------------------------------------------------------------------


def pearson(xs: list[float], ys: list[float]) -> float:
    pairs = [(x, y) for x, y in zip(xs, ys) if not (math.isnan(x) or math.isnan(y))]
    if len(pairs) < 3:
        return math.nan
    mx = sum(x for x, _ in pairs) / len(pairs)
    my = sum(y for _, y in pairs) / len(pairs)
    sxy = sum((x - mx) * (y - my) for x, y in pairs)
    sx = math.sqrt(sum((x - mx) ** 2 for x, _ in pairs))
    sy = math.sqrt(sum((y - my) ** 2 for _, y in pairs))
    return sxy / (sx * sy) if sx > 0 and sy > 0 else math.nan


def hacking_report(candidates: list[Candidate], judgments: list[Judgment], pairs: list[Pair]) -> dict:
    """Signs that the policy exploits the judge: score tracks length, winners grow longer, wrong beats right."""
    scores = {j.key: j.score for j in judgments}
    s = [scores.get(c.key, math.nan) for c in candidates]
    lengths = [float(len(c.text)) for c in candidates]
    wrong_wins, total = 0.0, 0
    for group in by_prompt(candidates).values():
        items = [(v, bool(c.correct)) for c in group
                 if c.correct is not None and not math.isnan(v := scores.get(c.key, math.nan))]
        for vr, yr in items:
            for vw, yw in items:
                if yr and not yw:
                    total += 1
                    wrong_wins += 1.0 if vw > vr else 0.5 if vw == vr else 0.0
    return {
        "hacking/length_score_corr": pearson(lengths, s),
        "hacking/chosen_minus_rejected_len": mean(len(p.chosen) - len(p.rejected) for p in pairs),
        "hacking/prefers_wrong_rate": wrong_wins / total if total else math.nan,
    }


# ---- train/test contamination ---------------------------------------------------------------------


def overlapping(train: list[str], evals: list[str], n: int = 13) -> list[int]:
    """Indices of evaluation texts that share a word n-gram with a training text, or (short texts) equal one after
    normalising."""
    def norm(t: str) -> str:
        return " ".join(tokens(t))

    exact = {norm(t) for t in train}
    grams = {g for t in train for g in ngrams(tokens(t), n)}
    return [i for i, t in enumerate(evals) if norm(t) in exact or any(g in grams for g in ngrams(tokens(t), n))]


# ---- one iteration's row -----------------------------------------------------------------------------


def iteration_report(candidates: list[Candidate], judgments: list[Judgment], pairs: list[Pair], train_stats: dict,
                     accept: float) -> dict:
    """What the sampling, judging and training of one iteration did: sample/, judge/train_*, train/, hacking/."""
    judged = judge_report(candidates, judgments, accept, prefix="judge/train_")
    return {
        "sample/accuracy": mean(float(c.correct) for c in candidates if c.correct is not None),
        "sample/mean_logprob": mean(c.logprob for c in candidates),
        "sample/entropy": mean(c.entropy for c in candidates),
        **judged,
        "judge/parse_fail_rate": judged["judge/train_parse_fail_rate"],
        "judge/margin": margin(candidates, judgments),
        "train/loss": train_stats["loss_last"], "train/steps": train_stats["steps"],
        "train/skipped_steps": train_stats["skipped_steps"], "train/tokens": train_stats["tokens"],
        **{k: v for k, v in train_stats.items() if k.startswith("train/")},  # the objective's own figures
        **hacking_report(candidates, judgments, pairs),
    }


def collapse(row: dict, seed_row: dict) -> dict:
    """Diversity relative to M0's (iteration 0): values well below 1 mean the policy is collapsing.

    Also the judge's drift: its agreement with the verifier now minus M0's.
    """
    out = {}
    if isinstance(row.get("judge/agreement"), float) and isinstance(seed_row.get("judge/agreement"), float):
        out["judge/agreement_drift"] = row["judge/agreement"] - seed_row["judge/agreement"]
    for key, value in row.items():
        base = seed_row.get(key)
        if key.startswith("diversity/") and isinstance(value, float) and isinstance(base, float) and base > 0:
            out["collapse/" + key.split("/", 1)[1]] = value / base
    return out
