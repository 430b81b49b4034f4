"""A run's pairs.jsonl is TRL's preference data: TRL's DPOTrainer trains on it as written."""

from tests.unit.test_select import cands, cfg, select


def test_pairs_are_trl_preference_rows_and_train_a_dpo_step(tmp_path, tiny_model):
    """pairs.jsonl loads with `datasets`, is TRL's standard preference format, and DPOTrainer takes it as is."""
    import copy

    from datasets import load_dataset
    from trl import DPOConfig, DPOTrainer
    from trl.data_utils import is_conversational, maybe_apply_chat_template

    from selfreward.rundir.artifacts import write_jsonl

    rows = []
    for k in range(4):
        rows += cands([f"x={k + 1}", f"x={k + 10}"], pid=f"p{k}")
    scores = {(f"p{k}", i): (5.0 if i == 0 else 1.0) for k in range(4) for i in range(2)}
    _, pairs, st = select(rows, scores, cfg())
    assert st["select/pairs"] == 4
    write_jsonl(tmp_path / "pairs.jsonl", pairs)
    ds = load_dataset("json", data_files=str(tmp_path / "pairs.jsonl"), split="train")
    assert {"prompt", "chosen", "rejected"} <= set(ds.column_names)
    assert not is_conversational(ds[0])
    model, tok = tiny_model
    assert maybe_apply_chat_template(ds[0], tok)["chosen"] == "x=1"  # standard rows pass through unchanged
    args = DPOConfig(output_dir=str(tmp_path / "dpo"), max_steps=1, per_device_train_batch_size=2, report_to=[],
                     logging_steps=1, save_strategy="no", use_cpu=True, dataset_num_proc=None)
    trainer = DPOTrainer(model=copy.deepcopy(model).train(), args=args, train_dataset=ds, processing_class=tok)
    out = trainer.train()
    assert out.training_loss == out.training_loss  # finite, not NaN
