"""The built-in `sequence` task: a problem space split by prompt hash into evaluation, M0's seed split and
training, whatever the pool sizes and seeds; answers the verifier checks."""

import pytest

from selfreward import data
from selfreward.data import DataError
from selfreward.m0 import bootstrap
from selfreward.scorers.verifier import is_correct
from selfreward.tasks import sequence
from tests.conftest import compose_config

TASK = sequence.SequenceTask(3, 5, 1, 60, 2, 12)


def test_problems_are_arithmetic_sequences_with_their_next_term():
    for row in TASK.space()[:50] + TASK.space()[-50:]:
        terms = [int(t) for t in row["prompt"].rstrip(",").split(", ")]
        step = terms[1] - terms[0]
        assert 3 <= len(terms) <= 5 and 2 <= step <= 12 and 1 <= terms[0] <= 60
        assert all(b - a == step for a, b in zip(terms, terms[1:]))
        assert int(row["answer"]) == terms[-1] + step
    assert len({r["prompt"] for r in TASK.space()}) == len(TASK.space()) == 3 * 60 * 11


@pytest.mark.parametrize("seed", [0, 7, 1234])
def test_parts_are_disjoint_by_text_whatever_the_sizes_and_seeds(seed):
    parts = {w: sequence.pool(TASK, n, seed, w) for w, n in
             [(sequence.EVAL, 128), (sequence.SEED, 200), (sequence.TRAIN, 1200)]}
    texts = {w: {r["prompt"] for r in rows} for w, rows in parts.items()}
    assert not texts["eval"] & texts["seed"] and not texts["eval"] & texts["train"]
    assert not texts["seed"] & texts["train"]
    assert all(sequence.part(p) == w for w, ps in texts.items() for p in ps)
    # a smaller pool is a prefix of the same shuffle: growing n_train never moves a prompt across parts
    assert sequence.pool(TASK, 50, seed, sequence.TRAIN) == parts["train"][:50]


def test_asking_for_more_than_a_part_holds_says_how_large_it_is():
    with pytest.raises(ValueError, match=r"eval part of the problem space holds \d+ prompts"):
        sequence.pool(sequence.SequenceTask(4, 4, 1, 20, 2, 9), 100, 0, sequence.EVAL)
    cfg = compose_config(["data.task=sequence", "data.n_eval=100000"])
    with pytest.raises(DataError, match="data.n_eval=100000"):
        data.builtin(cfg.data)


def test_the_verifier_checks_the_next_term():
    assert is_correct(" 29", "29") and is_correct("29", "29")
    assert not is_correct(" 28", "29") and not is_correct("", "29")


def test_m0_seed_split_is_the_tasks_own_part(tmp_path):
    cfg = compose_config(["data.task=sequence", "data.n_train=900", "data.n_eval=128", "model.bootstrap.prompts=192"])
    train, evals, _ = data.load(cfg.data, tmp_path)
    pool, seed_split = bootstrap.split(train, cfg, data.seed_pool(cfg.data, 192))
    assert len(seed_split) == 192 and len(pool) == 900
    seen = {p.prompt for p in seed_split}
    assert not seen & {p.prompt for p in pool + evals}
    assert data.seed_pool(compose_config([]).data, 10) is None  # equation: the tail of the pool, as before
