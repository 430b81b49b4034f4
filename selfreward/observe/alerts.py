"""Turn the watch metrics into alerts: a terminal warning, an entry in summary.json, optionally an early stop."""

from __future__ import annotations

import math

# (kind, metric, direction, config field): the alert fires when the metric is above ("max") or below ("min") it
RULES = [
    ("collapse", "collapse/answer_entropy", "min", "collapse_answer_entropy"),
    ("collapse", "collapse/distinct_1_all", "min", "collapse_distinct_all"),
    ("collapse", "diversity/duplicate_rate", "max", "duplicate_rate"),
    ("saturation", "judge/train_saturation", "max", "saturation"),
    ("hacking", "hacking/length_score_corr", "max", "length_score_corr"),
    ("hacking", "hacking/prefers_wrong_rate", "max", "prefers_wrong_rate"),
    ("contamination", "contamination/overlap", "max", "contamination"),
    ("likelihood", "train/logps_chosen_change_per_token", "min", "chosen_logp_change"),
    ("judge", "judge/auc_within", "min", "judge_auc_within_min"),
]
# what the judge alert tells a user to try: the loop trains on the judge's picks, so a judge that cannot rank one
# prompt's candidates teaches noise
JUDGE_HINT = ("the judge does not rank one prompt's candidates better than the threshold, so training on its picks "
              "would fit noise; try judge=verifier, judge=combined, or a seed that learnt evaluation data "
              "(model.bootstrap.enabled=true, or python -m selfreward.seed)")
UNMEASURED = ("judge/auc_within cannot be measured: no held-out prompt had both a right and a wrong sample, so "
              "nothing says whether the judge ranks candidates (more eval.k, or prompts the model gets right "
              "sometimes)")


def check(row: dict, cfg) -> list[dict]:
    """The alerts `row` raises. The judge's within-prompt AUC is checked at every iteration; at iteration 0 (the
    preflight, on held-out samples before any training) a figure that cannot be measured is reported too."""
    out = []
    for kind, metric, direction, field in RULES:
        value, threshold = row.get(metric), getattr(cfg, field)
        if threshold is None or not isinstance(value, (int, float)):
            continue
        if math.isnan(value):
            if metric == "judge/auc_within" and row["iteration"] == 0:
                out.append({"iteration": 0, "kind": "judge unmeasured", "metric": metric, "value": value,
                            "threshold": threshold, "note": UNMEASURED})
            continue
        if (direction == "max" and value > threshold) or (direction == "min" and value < threshold):
            alert = {"iteration": row["iteration"], "kind": kind, "metric": metric, "value": value,
                     "threshold": threshold}
            out.append({**alert, "note": JUDGE_HINT} if kind == "judge" else alert)
    return out


def stops_before_training(alerts: list[dict], cfg) -> bool:
    """The preflight's verdict: with alerts.early_stop, a judge below its threshold at iteration 0 stops the run
    before any training."""
    return cfg.early_stop and any(a["kind"] == "judge" for a in alerts)
