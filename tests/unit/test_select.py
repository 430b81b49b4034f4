import math

from selfreward.records import Pair
from selfreward.select import SelectionConfig
from selfreward.select import select as select_records
from tests.conftest import cand, judged


def cfg(**kw):
    """The schema's selection settings, keeping the best whatever its score unless a test sets a threshold."""
    return SelectionConfig(**{"threshold": None, **kw})


def cands(texts, pid="p", finals=None, logprobs=None, correct=None):
    return [cand(pid, i, t, final=(finals or [None] * len(texts))[i], logprob=(logprobs or [0.0] * len(texts))[i],
                 correct=(correct or [None] * len(texts))[i]) for i, t in enumerate(texts)]


def select(candidates, scores, config, seed=0):
    """select() with scores given as {(prompt_id, cand_idx): score}."""
    return select_records(candidates, judged(scores), config, seed)


def test_top1_takes_highest_score():
    c = cands(["a", "b", "c"], correct=[False, True, False])
    sel, pairs, st = select(c, {("p", 0): 1.0, ("p", 1): 4.5, ("p", 2): 2.0}, cfg())
    assert [s.completion for s in sel] == ["b"]
    assert st["select/verified_precision"] == 1.0
    assert pairs == [Pair("Q", "b", "a", "p", 4.5, 1.0)]


def test_ties_break_to_shortest_then_index():
    c = cands(["long answer", "short", "tiny"])
    sel, _, _ = select(c, {("p", 0): 5.0, ("p", 1): 5.0, ("p", 2): 5.0}, cfg())
    assert sel[0].completion == "tiny"
    sel, _, _ = select(c, {("p", 0): 5.0, ("p", 1): 5.0, ("p", 2): 5.0}, cfg(tie_break="first"))
    assert sel[0].completion == "long answer"


def test_threshold_abstains_and_topk_keeps_above():
    c = cands(["a", "b", "c"])
    scores = {("p", 0): 2.0, ("p", 1): 4.0, ("p", 2): 3.5}
    sel, _, st = select(c, scores, cfg(top_k=2, threshold=3.5))
    assert [s.completion for s in sel] == ["b", "c"]
    sel, _, st = select(c, scores, cfg(threshold=4.5))
    assert sel == [] and st["select/abstained"] == 1.0


def test_margin_skips_saturated_prompts_and_nan_never_selected():
    c = cands(["a", "b"]) + cands(["x", "y"], pid="q")
    scores = {("p", 0): 3.0, ("p", 1): 3.0, ("q", 0): math.nan, ("q", 1): 1.0}
    sel, _, st = select(c, scores, cfg(min_margin=0.5))
    assert [s.completion for s in sel] == ["y"]
    assert st["select/skipped_saturated"] == 0.5


def test_random_control_is_deterministic_and_ignores_scores():
    c = cands([str(i) for i in range(8)])
    a, _, _ = select(c, {}, cfg(strategy="random", seed=3))
    b, _, _ = select(c, {("p", 0): 9.0}, cfg(strategy="random", seed=3))
    assert a[0].completion == b[0].completion
    picks = {select(c, {}, cfg(strategy="random", seed=s))[0][0].completion for s in range(20)}
    assert len(picks) > 1


def test_random_control_pairs_two_different_candidates_for_dpo():
    c = cands([str(i) for i in range(4)]) + cands(["only"], pid="q")
    _, pairs, st = select(c, {}, cfg(strategy="random", seed=1))
    assert len(pairs) == 1 == st["select/pairs"] and pairs[0].chosen != pairs[0].rejected  # q has one candidate
    assert {pairs[0].chosen, pairs[0].rejected} <= {"0", "1", "2", "3"}


def test_majority_picks_most_common_final_answer():
    c = cands(["x=3", "x=4", "x = 4", "x=5"], finals=["3", "4", "4", "5"])
    sel, _, _ = select(c, {}, cfg(strategy="majority"))
    assert sel[0].completion == "x=4"


def test_logprob_picks_most_likely():
    c = cands(["a", "b", "c"], logprobs=[-2.0, -0.1, -1.0])
    sel, _, _ = select(c, {}, cfg(strategy="logprob"))
    assert sel[0].completion == "b"


def test_length_tolerance_prefers_shortest_near_best():
    c = cands(["a long winning answer", "short", "mid answer", "x"])
    scores = {("p", 0): 5.0, ("p", 1): 4.6, ("p", 2): 4.9, ("p", 3): 1.0}
    sel, pairs, _ = select(c, scores, cfg())
    assert sel[0].completion == "a long winning answer"
    sel, pairs, _ = select(c, scores, cfg(length_tolerance=0.5, top_k=2))
    assert [s.completion for s in sel] == ["short", "mid answer"]  # within 0.5 of the best, shortest first
    assert pairs[0].chosen == "short" and pairs[0].rejected == "x"
    sel, _, _ = select(c, scores, cfg(length_tolerance=0.5, threshold=4.7))
    assert sel == []  # the threshold still applies to the length-controlled pick


def test_oracle_keeps_verified_answers_only():
    """The upper-bound control: a verified right answer per prompt (shortest first), nothing where none is right,
    and a right-vs-wrong pair."""
    from selfreward.select import SelectionConfig, select
    from tests.conftest import cand, judged

    cands = [cand("a", 0, "x=22", correct=False), cand("a", 1, "x=3", correct=True), cand("a", 2, "x=33", correct=True),
             cand("b", 0, "x=1", correct=False), cand("b", 1, "x=2", correct=False)]
    scores = {("a", 0): 5, ("a", 1): 1, ("a", 2): 1, ("b", 0): 5, ("b", 1): 5}  # the judge's, ignored
    selected, pairs, stats = select(cands, judged(scores), SelectionConfig(strategy="oracle"))
    assert [(s.prompt_id, s.completion) for s in selected] == [("a", "x=3")]
    assert [(p.chosen, p.rejected) for p in pairs] == [("x=3", "x=22")]
    assert stats["select/verified_precision"] == 1.0 and stats["select/abstained"] == 0.5


def test_no_strategy_pairs_two_equal_texts():
    """Duplicates are common (a base model repeats its answer; a sampled judge can score them apart): a pair of
    equal texts gives DPO no gradient, so none is made; with only one distinct text there is no pair."""
    dup = cands(["x=3", "x=3", "x=3", "x=4"], finals=["3", "3", "3", "4"], logprobs=[-0.1, -0.1, -0.1, -2.0],
                correct=[True, True, True, False])
    same = cands(["x=5", "x=5", "x=5"], pid="q", finals=["5"] * 3, logprobs=[-0.1, -0.3, -0.2],
                 correct=[True] * 3)
    scores = {("p", 0): 5.0, ("p", 1): 1.0, ("p", 2): 4.0, ("p", 3): 2.0, ("q", 0): 5.0, ("q", 1): 1.0, ("q", 2): 3.0}
    for strategy in ("judge", "random", "majority", "logprob", "oracle"):
        for seed in range(10):
            _, pairs, _ = select(dup + same, scores, cfg(strategy=strategy, seed=seed))
            assert all(p.chosen != p.rejected for p in pairs), strategy
            assert [p.prompt_id for p in pairs] == ["p"], strategy  # q holds one text: no pair
    _, pairs, _ = select(dup, scores, cfg())
    assert (pairs[0].chosen, pairs[0].rejected) == ("x=3", "x=4")  # the worst of another text, not the twin


def test_pair_precision_says_how_many_pairs_the_verifier_backs():
    c = (cands(["a", "b"], pid="p", correct=[True, False]) + cands(["c", "d"], pid="q", correct=[True, True])
         + cands(["e", "f"], pid="r", correct=[False, False]) + cands(["g", "h"], pid="s", correct=[False, True]))
    scores = {(pid, 0): 5.0 for pid in "pqrs"} | {(pid, 1): 1.0 for pid in "pqrs"}
    _, pairs, st = select(c, scores, cfg())
    assert len(pairs) == 4
    assert st["select/pair_precision"] == 0.25 and st["select/pairs_both_right"] == 0.25
    assert st["select/pairs_both_wrong"] == 0.25  # and one pair the wrong way round
    _, _, st = select(cands(["a", "b"]), {("p", 0): 5.0, ("p", 1): 1.0}, cfg())
    assert math.isnan(st["select/pair_precision"])  # no verdicts: unmeasured, not zero
