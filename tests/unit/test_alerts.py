"""Alerts from a metric row: thresholds, the judge preflight at iteration 0, and what it says."""

import math

from selfreward.config import AlertsConfig
from selfreward.observe.alerts import check, preflight, stops_before_training


def test_judge_preflight_fires_below_threshold_and_stops_only_when_asked():
    cfg = AlertsConfig()
    alerts = check({"iteration": 0, "judge/auc_within": 0.55}, cfg)
    assert [a["kind"] for a in alerts] == ["judge"] and "judge=verifier" in alerts[0]["note"]
    assert not stops_before_training(alerts, cfg)
    assert stops_before_training(alerts, AlertsConfig(early_stop=True))
    assert check({"iteration": 0, "judge/auc_within": 0.61}, cfg) == []
    assert [a["kind"] for a in check({"iteration": 2, "judge/auc_within": 0.4}, cfg)] == ["judge"]  # any iteration
    assert check({"iteration": 0, "judge/auc_within": 0.1}, AlertsConfig(judge_auc_within_min=None)) == []


def test_a_judge_nothing_measured_stops_the_run_only_with_early_stop_unless_allowed():
    row = {"iteration": 0, "judge/auc_within": math.nan, "judge/pref_accuracy": math.nan}
    alerts = check(row, AlertsConfig())
    assert [a["kind"] for a in alerts] == ["judge unmeasured"]
    note = alerts[0]["note"]
    assert "judge/auc_within could not be measured" in note and "judge/pref_accuracy could not be measured" in note
    assert "eval.preferences" in note  # names the ways to measure it
    assert not stops_before_training(alerts, AlertsConfig())
    assert stops_before_training(alerts, AlertsConfig(early_stop=True))
    assert not stops_before_training(alerts, AlertsConfig(early_stop=True, require_measured_judge=False))
    assert [a["kind"] for a in check({"iteration": 0}, AlertsConfig())] == ["judge unmeasured"]  # nothing tried
    assert check({"iteration": 3, "judge/auc_within": math.nan}, AlertsConfig()) == []  # later: the table shows it
    verdict = preflight(row, alerts, AlertsConfig())
    assert verdict == {"judge": "unmeasured", "figures": {}, "thresholds": {}}


def test_preference_accuracy_alone_measures_the_judge_and_passes_or_fails_it():
    cfg = AlertsConfig(early_stop=True)
    row = {"iteration": 0, "judge/auc_within": math.nan, "judge/pref_accuracy": 0.5}
    alerts = check(row, cfg)
    assert [(a["kind"], a["metric"]) for a in alerts] == [("judge", "judge/pref_accuracy")]
    assert stops_before_training(alerts, cfg) and preflight(row, alerts, cfg)["judge"] == "failed"
    row["judge/pref_accuracy"] = 0.8
    assert check(row, cfg) == [] and not stops_before_training([], cfg)
    assert preflight(row, [], cfg) == {"judge": "passed", "figures": {"judge/pref_accuracy": 0.8},
                                       "thresholds": {"judge/pref_accuracy": 0.6}}
    unchecked = AlertsConfig(judge_pref_accuracy_min=None)
    assert preflight(row, check(row, unchecked), unchecked)["judge"] == "not checked (no threshold set)"
    both = {"iteration": 0, "judge/auc_within": 0.9, "judge/pref_accuracy": 0.55}  # either failing fails it
    assert preflight(both, check(both, cfg), cfg)["judge"] == "failed"


def test_judgments_that_ran_without_their_grammar_raise_their_own_alert():
    row = {"iteration": 1, "judge/auc_within": 0.9, "judge/unconstrained": 3}
    assert [(a["kind"], a["value"]) for a in check(row, AlertsConfig())] == [("grammar", 3)]
    assert check({**row, "judge/unconstrained": 0}, AlertsConfig()) == []
    assert check(row, AlertsConfig(unconstrained=5)) == []  # a user may tolerate a few
    assert not stops_before_training(check({**row, "iteration": 0}, AlertsConfig(early_stop=True)),
                                     AlertsConfig(early_stop=True))  # an engine problem, not the judge's ranking
