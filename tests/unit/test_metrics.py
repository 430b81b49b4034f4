import math

import pytest

from selfreward.observe.metrics import agreement, auc, auc_within, judge_report
from tests.conftest import cand, judged


def test_auc_known_values():
    assert auc([0.9, 0.8, 0.1, 0.2], [True, True, False, False]) == 1.0
    assert auc([0.1, 0.2, 0.9, 0.8], [True, True, False, False]) == 0.0
    assert auc([1, 1, 1, 1], [True, False, True, False]) == 0.5
    assert auc([0.3, 0.2, 0.1], [True, False, True]) == 0.5
    assert math.isnan(auc([1, 2], [True, True]))


def test_within_prompt_auc_ignores_prompt_difficulty():
    # pooled AUC is perfect because the judge only recognises the easy prompt,
    # but inside each prompt it ranks the candidates backwards
    groups = ["easy"] * 10 + ["hard"] * 10
    labels = [True] * 9 + [False] + [True] + [False] * 9
    scores = [0.8] * 9 + [0.85] + [0.1] + [0.15] * 9
    assert auc_within(groups, scores, labels) == 0.0
    assert auc(scores, labels) == 0.81


def test_agreement_and_report():
    assert agreement([5, 1, 5, math.nan], [True, False, False, True], accept=3) == pytest.approx(2 / 3)
    cands = [cand("p", i, "a", correct=y) for i, y in enumerate([True, False])]
    cands += [cand("q", i, "a", correct=False) for i in range(2)]
    judg = judged({("p", 0): 5.0, ("p", 1): 1.0, ("q", 0): 2.0, ("q", 1): 2.0})
    r = judge_report(cands, judg, accept=3.0)
    assert r["judge/saturation"] == 0.5
    assert r["judge/auc_within"] == 1.0
    assert r["judge/agreement"] == 1.0
    assert r["judge/parse_fail_rate"] == 0.0


def test_diversity_of_identical_and_disjoint_candidates():
    from selfreward.observe.metrics import distinct_n, diversity_report, self_bleu

    same = ["the cat sat on the mat"] * 4
    disjoint = ["alpha beta gamma", "delta epsilon zeta", "eta theta iota", "kappa lambda mu"]
    assert self_bleu(same) == pytest.approx(1.0)
    assert self_bleu(disjoint) < 1e-6
    assert distinct_n(same, 2) == pytest.approx(5 / 20)
    assert distinct_n(disjoint, 1) == 1.0
    rows = [cand("p", i, t, final="1") for i, t in enumerate(same)]
    r = diversity_report(rows)
    assert r["diversity/duplicate_rate"] == 0.75 and r["diversity/answer_entropy"] == 0.0
    rows = [cand("p", i, t, final=str(i)) for i, t in enumerate(disjoint)]
    r = diversity_report(rows)
    assert r["diversity/duplicate_rate"] == 0.0 and r["diversity/answer_entropy"] == pytest.approx(math.log(4))


def test_embedding_similarity_of_identical_and_different_candidates():
    from selfreward.observe.embed import mean_pairwise_cosine

    same = [cand("p", i, "the cat sat on the mat") for i in range(3)]
    diff = [cand("q", i, t) for i, t in enumerate(["the cat sat on the mat", "stock markets fell sharply", "x=49"])]
    assert mean_pairwise_cosine(same) == pytest.approx(1.0, abs=1e-4)
    assert mean_pairwise_cosine(diff) < 0.5


def test_failed_judgments_count_as_parse_failures_and_are_never_selected():
    from selfreward.select import SelectionConfig, select

    cands = [cand("p", i, t, correct=y) for i, (t, y) in enumerate([("a", True), ("b", False)])]
    judg = judged({("p", 0): math.nan, ("p", 1): 1.0}, parse_fail={("p", 0): 1})
    r = judge_report(cands, judg, accept=3.0)
    assert r["judge/parse_fail_rate"] == 0.5
    cfg = SelectionConfig(threshold=None, tie_break="first")
    sel, _, _ = select(cands, judg, cfg)
    assert [s.completion for s in sel] == ["b"]


def test_kendall_within_ranks_each_prompt_apart_and_skips_all_tied_prompts():
    from selfreward.observe.metrics import kendall_tau, kendall_within

    groups = ["a", "a", "a", "b", "b", "b", "c", "c"]
    before = [1.0, 2.0, 3.0, 5.0, 4.0, 3.0, 2.0, 2.0]
    after = [10.0, 20.0, 30.0, 1.0, 2.0, 3.0, 7.0, 7.0]  # a: same order, b: reversed, c: all tied (undefined)
    assert kendall_within(groups, before, after) == 0.0
    assert kendall_within(groups, before, before) == 1.0
    # pooled, the prompts' levels dominate: the same scorings look strongly concordant
    assert kendall_tau([1, 2, 11, 12], [1, 2, 12, 11]) > 0.3 and kendall_within(["a", "a", "b", "b"], [1, 2, 11, 12],
                                                                                  [1, 2, 12, 11]) == 0.0
    assert math.isnan(kendall_within(["a", "a"], [1.0, 1.0], [2.0, 3.0]))
