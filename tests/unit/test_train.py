import copy

import torch

from selfreward.config import TrainConfig
from selfreward.train import Example, collate, encode, train_lora


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
    cfg = TrainConfig(steps=3, batch_size=4, replay_fraction=0.0, lr=1e-2)
    rows = [{"prompt": "2x+1=5", "completion": "x=2"}, {"prompt": "3x+3=9", "completion": "x=2"}]
    peft_model, stats = train_lora(model, tok, rows, [], cfg, seed=0)
    assert stats["steps"] == 3 and stats["skipped_steps"] == 0
    lora_b = [p for n, p in peft_model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)  # B starts at zero: every one moved
    merged = peft_model.merge_and_unload()
    changed = [k for k, v in merged.state_dict().items() if k in base and not torch.equal(v, base[k])]
    assert any("q_proj" in k for k in changed)


def test_non_finite_losses_are_skipped_then_abort(tiny_model):
    import pytest

    from selfreward.train import TrainingAborted, fit

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
        fit(model, draw, steps=10, lr=1e-3, pad_id=tok.pad_token_id, max_bad_steps=3, progress=False)
    assert calls["n"] == 3
