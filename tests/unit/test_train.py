import copy

import pytest
import torch

from selfreward.records import Selection
from selfreward.train.sft import Example, collate, encode, loss
from selfreward.train.stage import steps_for, train
from tests.conftest import compose_config


def test_loss_only_on_completion_and_score_token_weighted(tiny_model):
    _, tok = tiny_model
    e = encode(tok, "2x+1=5", "x=2")
    assert tok.decode(e.ids[e.n_prompt :]) == "x=2</s>"
    b = collate([Example(e.ids, e.n_prompt, last_weight=5.0)], tok.pad_token_id, torch.device("cpu"))
    w = b["weights"][0].tolist()
    assert w[: e.n_prompt] == [0.0] * e.n_prompt
    assert w[len(e.ids) - 2] == 5.0 and w[len(e.ids) - 1] == 1.0


def test_lora_training_changes_every_adapter_weight_and_not_the_base(tiny_model):
    model, tok = tiny_model
    model = copy.deepcopy(model)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = compose_config(["+experiment=tiny", "train.steps=3", "train.batch_size=4", "train.replay_fraction=0",
                          "train.lr=1e-2"])
    rows = [Selection("2x+1=5", "x=2", "a", 0, 5.0, None), Selection("3x+3=9", "x=2", "b", 0, 5.0, None)]
    peft_model, stats = train(model, tok, rows, [], cfg, seed=0, name="sft")
    assert stats["steps"] == 3 and stats["skipped_steps"] == 0
    lora_b = [p for n, p in peft_model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)  # B starts at zero: every one moved
    merged = peft_model.merge_and_unload()
    changed = [k for k, v in merged.state_dict().items() if k in base and not torch.equal(v, base[k])]
    assert any("q_proj" in k for k in changed)


def test_non_finite_losses_are_skipped_then_abort(tiny_model):

    from selfreward.train.fit import TrainingAborted, fit

    model, tok = tiny_model
    model = copy.deepcopy(model)
    e = encode(tok, "2x+1=5", "x=2")
    calls = {"n": 0}

    def draw(step):
        calls["n"] += 1
        return [e]

    with torch.no_grad():
        model.lm_head.weight.fill_(float("nan"))
    with pytest.raises(TrainingAborted, match="3 non-finite losses in a row"):
        fit(model, draw, collate, loss, steps=10, lr=1e-3, pad_id=tok.pad_token_id, max_bad_steps=3, progress=False)
    assert calls["n"] == 3


def test_length_buckets_cover_rows_once_and_cut_at_length_jumps():
    from selfreward.train.fit import length_buckets

    lengths = [20, 46, 21, 20, 47, 22] * 8
    chunks = length_buckets(lengths)
    assert sorted(i for c in chunks for i in c) == list(range(len(lengths)))
    assert len(chunks) == 2 and {max(lengths[i] for i in c) for c in chunks} == {22, 47}
    assert all(len(c) <= 5 for c in length_buckets(lengths, max_rows=5))
    assert length_buckets([30] * 10) == [list(range(10))]  # nothing to gain: one forward
    assert length_buckets([]) == []


def test_step_plan_gives_each_rank_its_slice_in_length_buckets():
    from selfreward.train.fit import length_buckets, step_plan

    rows = [Example([4] * n, 1) for n in (5, 60, 5, 60, 5, 60, 60)]
    plans = step_plan(rows, world=2)
    for r, plan in enumerate(plans):  # rank r trains rows[r::2], each once
        assert sorted(id(e) for chunk in plan for e in chunk) == sorted(id(e) for e in rows[r::2])
    assert [len(plan) for plan in plans] == [2, 1]  # 5 5 5 | 60 on rank 0, 60 60 60 on rank 1
    whole = step_plan(rows, world=1)[0]
    assert whole == [[rows[i] for i in chunk] for chunk in length_buckets([e.length for e in rows])]
    assert step_plan(rows[:1], world=2)[1] == []  # a rank with no rows: `fit` gives it calls that add nothing


def test_bucketed_step_has_the_full_batch_loss_and_gradient(tiny_model):
    """Micro-batches of similar length, normalised by the whole step's weight, give the full batch's loss and
    gradient: bucketing changes the speed, not the training."""
    from peft import LoraConfig, get_peft_model

    from selfreward.train.fit import length_buckets

    model, tok = tiny_model
    torch.manual_seed(0)
    peft_model = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                                 init_lora_weights=False))
    rows = [encode(tok, f"{a}x+{a}={a * 3}", "x=2") for a in range(2, 8)] + [
        encode(tok, f"check {a}x+1={a + 1} x=1", "ok " * a, last_weight=3.0) for a in range(2, 6)]
    params = [p for p in peft_model.parameters() if p.requires_grad]

    def grads(batches, denominator):
        peft_model.zero_grad()
        total = sum(loss(peft_model, b, denominator) for b in batches)
        total.backward()
        return float(total.detach()), [p.grad.clone() for p in params]

    full_loss, full = grads([collate(rows, tok.pad_token_id, torch.device("cpu"))], None)
    chunks = length_buckets([len(e.ids) for e in rows], overhead=0)
    assert len(chunks) > 2
    batches = [collate([rows[i] for i in c], tok.pad_token_id, torch.device("cpu")) for c in chunks]
    weight = sum(b["weight"] for b in batches)
    split_loss, split = grads(batches, weight)
    assert split_loss == pytest.approx(full_loss, rel=1e-5)
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-7) for a, b in zip(full, split))


def test_epochs_size_training_by_the_rows_kept_with_steps_as_a_cap():
    cfg = compose_config(["train.epochs=2", "train.steps=0", "train.batch_size=64"]).train
    assert steps_for(cfg, rows=8, per_step=45) == 1  # 8 rows kept: one step holds them all, twice over
    assert steps_for(cfg, rows=450, per_step=45) == 20
    cfg.steps = 12
    assert steps_for(cfg, rows=450, per_step=45) == 12  # train.steps caps
    cfg.epochs = 0
    assert steps_for(cfg, rows=8, per_step=45) == 12  # epochs=0: a fixed number of steps


def test_training_objective_is_the_module_of_the_chosen_schema():
    from selfreward.train import sft
    from selfreward.train.stage import objective_name

    cfg = compose_config([])
    assert objective_name(cfg.train) == "sft" and isinstance(cfg.train.replay_fraction, float)
    assert objective_name(sft.Config()) == "sft"
