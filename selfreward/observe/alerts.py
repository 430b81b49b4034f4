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
    ("judge", "judge/pref_accuracy", "min", "judge_pref_accuracy_min"),
    ("grammar", "judge/unconstrained", "max", "unconstrained"),
]
# the figures that measure the judge: against the verifier, against labelled preferences
JUDGE_FIGURES = ("judge/auc_within", "judge/pref_accuracy")
# what the judge alert tells a user to try: the loop trains on the judge's picks, so a judge that cannot rank one
# prompt's candidates teaches noise
JUDGE_HINT = ("the judge does not rank responses better than the threshold, so training on its picks would fit "
              "noise; try judge=verifier, judge=combined, another rubric, or a seed that learnt evaluation data "
              "(model.bootstrap.enabled=true, or python -m selfreward m0)")
HOW_TO_MEASURE = ("give the held-out prompts reference answers or tests (the verifier: judge/auc_within), or a "
                  "labelled preference set (eval.preferences=FILE.jsonl or hf:NAME[@CONFIG]:SPLIT of "
                  "prompt/chosen/rejected: judge/pref_accuracy)")
UNMEASURED = {
    "judge/auc_within": "no held-out prompt had a right and a wrong sample that both got a score (more eval.k, "
                        "prompts the model gets right sometimes, or a judge whose output fits its budget: "
                        "judge/parse_fail_rate)",
    "judge/pref_accuracy": "no preference pair got a score on both sides (judge/pref_unscored, "
                           "judge/parse_fail_rate)",
}


def check(row: dict, cfg) -> list[dict]:
    """The alerts `row` raises. The judge's figures are checked at every iteration; at iteration 0 (the preflight,
    on held-out data before any training) a judge that nothing measured is an alert of its own."""
    out = []
    for kind, metric, direction, field in RULES:
        value, threshold = row.get(metric), getattr(cfg, field)
        if threshold is None or not isinstance(value, (int, float)) or math.isnan(value):
            continue
        if (direction == "max" and value > threshold) or (direction == "min" and value < threshold):
            alert = {"iteration": row["iteration"], "kind": kind, "metric": metric, "value": value,
                     "threshold": threshold}
            out.append({**alert, "note": JUDGE_HINT} if kind == "judge" else alert)
    if row["iteration"] == 0 and not measured(row):
        tried = [f"{m} could not be measured: {UNMEASURED[m]}" for m in JUDGE_FIGURES if m in row]
        out.append({"iteration": 0, "kind": "judge unmeasured", "metric": "judge", "value": math.nan,
                    "threshold": None, "note": "; ".join(tried + [f"nothing measured the judge: {HOW_TO_MEASURE}"])})
    return out


def measured(row: dict) -> dict:
    """The judge figures `row` holds a value for."""
    return {m: row[m] for m in JUDGE_FIGURES if isinstance(row.get(m), (int, float)) and not math.isnan(row[m])}


def preflight(row: dict, alerts: list[dict], cfg) -> dict:
    """The judge preflight's verdict at iteration 0, for summary.json and the terminal: passed only where a figure
    was measured and checked against its threshold; else failed, unmeasured, or measured but not checked."""
    figures = measured(row)
    thresholds = {m: getattr(cfg, field) for _, m, _, field in RULES if m in figures}
    if not figures:
        status = "unmeasured"
    elif any(a["kind"] == "judge" for a in alerts):
        status = "failed"
    else:
        status = "passed" if any(t is not None for t in thresholds.values()) else "not checked (no threshold set)"
    return {"judge": status, "figures": figures, "thresholds": thresholds}


def stops_before_training(alerts: list[dict], cfg) -> bool:
    """The preflight's verdict with alerts.early_stop: a judge below a threshold at iteration 0 stops the run before
    any training, and so does a judge nothing measured (unless alerts.require_measured_judge=false)."""
    unmeasured = cfg.require_measured_judge and any(a["kind"] == "judge unmeasured" for a in alerts)
    return cfg.early_stop and (unmeasured or any(a["kind"] == "judge" for a in alerts))


def measurable(cfg, eval_prompts: list, preferences: list) -> str | None:
    """Said loudly before any compute: why nothing will measure the judge, or None where something will."""
    labelled = cfg.eval.judge and any(p.answer is not None or p.tests for p in eval_prompts)
    if labelled or preferences:
        return None
    why = "eval.judge=false" if not cfg.eval.judge else "the held-out prompts have no reference answers or tests"
    stop = ("with alerts.early_stop=true the run stops before training (alerts.require_measured_judge=false goes on)"
            if cfg.alerts.early_stop and cfg.alerts.require_measured_judge else
            "the loop will train on the picks of an unmeasured judge")
    return f"nothing will measure the judge ({why}, and eval.preferences is not set): {stop}. To measure it, " \
           + HOW_TO_MEASURE
