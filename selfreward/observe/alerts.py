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
    ("likelihood", "train/logps_chosen_change", "min", "chosen_logp_change"),
]


def check(row: dict, cfg) -> list[dict]:
    out = []
    for kind, metric, direction, field in RULES:
        value, threshold = row.get(metric), getattr(cfg, field)
        if threshold is None or not isinstance(value, (int, float)) or math.isnan(value):
            continue
        if (direction == "max" and value > threshold) or (direction == "min" and value < threshold):
            out.append({"iteration": row["iteration"], "kind": kind, "metric": metric, "value": value,
                        "threshold": threshold})
    return out
