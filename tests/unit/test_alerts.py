"""Alerts from a metric row: thresholds, the judge preflight at iteration 0, and what it says."""

import math

from selfreward.config import AlertsConfig
from selfreward.observe.alerts import check, stops_before_training


def test_judge_preflight_fires_below_threshold_and_stops_only_when_asked():
    cfg = AlertsConfig()
    alerts = check({"iteration": 0, "judge/auc_within": 0.55}, cfg)
    assert [a["kind"] for a in alerts] == ["judge"] and "judge=verifier" in alerts[0]["note"]
    assert not stops_before_training(alerts, cfg)
    assert stops_before_training(alerts, AlertsConfig(early_stop=True))
    assert check({"iteration": 0, "judge/auc_within": 0.61}, cfg) == []
    assert [a["kind"] for a in check({"iteration": 2, "judge/auc_within": 0.4}, cfg)] == ["judge"]  # any iteration
    assert check({"iteration": 0, "judge/auc_within": 0.1}, AlertsConfig(judge_auc_within_min=None)) == []


def test_an_unmeasurable_preflight_says_so_without_stopping():
    cfg = AlertsConfig(early_stop=True)
    alerts = check({"iteration": 0, "judge/auc_within": math.nan}, cfg)
    assert [a["kind"] for a in alerts] == ["judge unmeasured"] and "cannot be measured" in alerts[0]["note"]
    assert not stops_before_training(alerts, cfg)
    assert check({"iteration": 3, "judge/auc_within": math.nan}, cfg) == []  # later: the table shows it
    assert check({"iteration": 0}, cfg) == []  # no verifier labels at all: nothing to measure, nothing to say
