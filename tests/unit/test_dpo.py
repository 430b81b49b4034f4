"""LoRA-DPO (`train=dpo`): the loss and reward figures equal TRL's DPOTrainer, and an iteration moves its own pairs."""

import copy
import math

import pytest
import torch

from selfreward.records import Pair
from selfreward.train import dpo
from selfreward.train.stage import train
from tests.conftest import compose_config

PAIRS = [("2x+1=5", "x=2", "x=7"), ("3x+3=9", "x=2", "x=20"), ("5x+5=30", "x=5", "x=6"), ("4x+2=10", "x=2", "x=3")]


@pytest.mark.parametrize("loss_type, nll_weight", [("sigmoid", 0.0), ("ipo", 0.0), ("hinge", 0.0), ("sigmoid", 1.0)])
def test_loss_and_rewards_equal_trls_dpo_trainer(tmp_path, tiny_model, loss_type, nll_weight):
    """Same tiny model, batch and reference: our loss (nll_weight: TRL's loss_type=[..., "sft"]) and reward figures
    are TRL's."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    model, tok = tiny_model
    ds = Dataset.from_list([{"prompt": p, "chosen": c, "rejected": r} for p, c, r in PAIRS])
    losses = dict(loss_type=[loss_type, "sft"], loss_weights=[1.0, nll_weight]) if nll_weight else \
        dict(loss_type=[loss_type])
    args = DPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, beta=0.1, report_to=[], use_cpu=True,
                     dataset_num_proc=None, save_strategy="no", **losses)
    trainer = DPOTrainer(model=copy.deepcopy(model), args=args, train_dataset=ds, processing_class=tok,
                         peft_config=LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    policy = trainer.model
    torch.manual_seed(0)
    with torch.no_grad():  # move the new adapter off zero, so the policy differs from its reference
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    batch = next(iter(trainer.get_train_dataloader()))
    theirs = float(trainer.compute_loss(policy, batch))
    figures = {k: v[-1] for k, v in trainer._metrics["train"].items()}

    ours = {k: batch[k] for k in ("input_ids", "attention_mask", "completion_mask")}
    with torch.no_grad(), policy.disable_adapter():  # TRL's reference for a new adapter: the adapter disabled
        ref, _ = dpo.sequence_logps(policy, ours)
    ours.update(ref_chosen=ref.chunk(2)[0], ref_rejected=ref.chunk(2)[1], weight=float(len(PAIRS)))
    cfg = dpo.Config(beta=0.1, loss=loss_type, nll_weight=nll_weight)
    assert float(dpo.loss(policy, ours, cfg=cfg)) == pytest.approx(theirs, abs=1e-4)
    with torch.no_grad():
        logps, counts = dpo.sequence_logps(policy, ours)
    _, f = dpo.pair_losses(logps, counts, ours, cfg)
    assert float(f["rewards_chosen"].mean()) == pytest.approx(figures["rewards/chosen"], abs=1e-4)
    assert float(f["rewards_rejected"].mean()) == pytest.approx(figures["rewards/rejected"], abs=1e-4)
    assert float(f["logps_chosen"].mean()) == pytest.approx(figures["logps/chosen"], abs=1e-4)
    assert abs(figures["rewards/chosen"]) > 1e-3  # the comparison is not between two zeros


def test_nll_weight_adds_the_chosen_tokens_mean_nll(tiny_model):
    model, tok = tiny_model
    rows = [dpo.PairExample(dpo.encode(tok, p, c), dpo.encode(tok, p, r)) for p, c, r in PAIRS]
    batch = dpo.collate(rows, tok.pad_token_id, torch.device("cpu"))
    plain = float(dpo.loss(model, batch, cfg=dpo.Config(beta=0.1, loss="sigmoid", nll_weight=0.0)))
    rpo = float(dpo.loss(model, batch, cfg=dpo.Config(beta=0.1, loss="sigmoid", nll_weight=1.0)))
    with torch.no_grad():
        logps, counts = dpo.sequence_logps(model, batch)
    nll = float(-logps.chunk(2)[0].sum() / counts.chunk(2)[0].sum())
    assert rpo == pytest.approx(plain + nll, rel=1e-5)


def test_one_dpo_iteration_widens_the_margin_of_its_own_pairs(tiny_model):
    model, tok = tiny_model
    cfg = compose_config(["+experiment=tiny", "train=dpo", "train.nll_weight=0", "train.steps=12", "train.batch_size=4",
                          "train.lr=5e-3"])
    pairs = [Pair(p, c, r, str(i), 5.0, 1.0) for i, (p, c, r) in enumerate(PAIRS)]
    trained, stats = train(copy.deepcopy(model), tok, [], pairs, cfg, seed=0, name="dpo")
    assert stats["steps"] == 12
    assert stats["train/rewards_margin"] > 0 and stats["train/rewards_accuracy"] == 1.0  # chosen rose over rejected
    assert stats["train/logps_chosen"] - stats["train/logps_rejected"] > 0
    assert stats["train/logps_chosen_change"] == pytest.approx(stats["train/rewards_chosen"] / 0.1)
    # per token (each chosen response is 3 characters and EOS here): a finite, nonzero move, smaller than the sum
    per_token = stats["train/logps_chosen_change_per_token"]
    assert math.isfinite(per_token) and 0 < abs(per_token) < abs(stats["train/logps_chosen_change"])
