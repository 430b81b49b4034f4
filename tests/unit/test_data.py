import json

import pytest

from selfreward.data import DataError, decontaminate, for_iteration, read_prompts
from selfreward.records import Prompt


def test_bad_rows_are_quarantined_with_line_and_reason(tmp_path):
    p = tmp_path / "prompts.jsonl"
    lines = [
        json.dumps({"id": "a", "prompt": "2x+1=5", "answer": 2}).encode(),
        b'{"prompt": "broken',
        json.dumps({"text": "no prompt"}).encode(),
        json.dumps({"prompt": "   "}).encode(),
        json.dumps({"id": "a", "prompt": "3x+1=7"}).encode(),
        b'{"prompt": "caf\xe9"}',
        json.dumps({"prompt": "x" * 500}).encode(),
        json.dumps({"id": "b", "prompt": "4x+4=8"}).encode(),
        b'{"prompt": "trunc',
    ]
    p.write_bytes(b"\n".join(lines))
    good, bad = read_prompts(str(p), fits=lambda s: "too long for the context" if len(s) > 100 else None)
    assert [g.id for g in good] == ["a", "b"]
    assert good[0].answer == "2"
    reasons = {b["line"]: b["reason"] for b in bad}
    assert reasons[2].startswith("malformed JSON")
    assert reasons[3] == "no 'prompt' field"
    assert reasons[4] == "empty prompt"
    assert reasons[5] == "duplicate id 'a'"
    assert reasons[6].startswith("not UTF-8")
    assert reasons[7] == "too long for the context"
    assert reasons[9].startswith("truncated last line")


def test_missing_file_is_one_clear_error(tmp_path):
    with pytest.raises(DataError, match="prompt file not found"):
        read_prompts(str(tmp_path / "nope.jsonl"))


def test_not_jsonl_at_all(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text("hello\nworld\n")
    with pytest.raises(DataError, match="no usable rows"):
        read_prompts(str(p))


def test_fresh_slices_and_decontamination():
    pool = [Prompt(str(i), f"p{i}") for i in range(10)]
    assert [r.id for r in for_iteration(pool, 1, 4)] == ["0", "1", "2", "3"]
    assert [r.id for r in for_iteration(pool, 2, 4)] == ["4", "5", "6", "7"]
    assert [r.id for r in for_iteration(pool, 3, 4)] == ["8", "9", "0", "1"]



def test_contaminated_eval_prompts_are_dropped_or_stop_the_run(tmp_path):
    from selfreward.config import DataConfig

    train = [Prompt("t1", "one two three four five six seven eight nine ten eleven twelve thirteen"),
             Prompt("t2", "2x+1=5")]
    evals = [Prompt("e1", "Zero one two three four five six seven eight nine ten eleven twelve thirteen!"),
             Prompt("e2", " 2X+1=5 "), Prompt("e3", "3x+1=7")]
    cfg = DataConfig(contamination_n=13, on_contamination="drop")
    kept, stats = decontaminate(train, evals, cfg, tmp_path)
    assert [r.id for r in kept] == ["e3"] and stats["contamination/overlapping"] == 2
    assert (tmp_path / "contaminated.jsonl").exists()
    with pytest.raises(DataError, match="overlap training prompts"):
        decontaminate(train, evals, DataConfig(contamination_n=13, on_contamination="stop"), tmp_path)


def test_sharded_stage_resumes_and_cleans_up(tmp_path):
    from selfreward.rundir.artifacts import IterDir

    calls = []

    def compute(part, shard):
        calls.append(shard)
        return [Prompt(str(x), "p") for x in part]

    it = IterDir(tmp_path, 1, "a")
    shards = it.path / "s.shards"
    shards.mkdir()
    (shards / "key.json").write_text(json.dumps(it.key))
    (shards / "00001.jsonl").write_text('{"id": "2", "prompt": "p"}\n{"id": "3", "prompt": "p"}\n')  # survived a kill
    rows, _ = it.sharded("s", Prompt, [0, 1, 2, 3, 4], 2, compute)
    assert [r.id for r in rows] == ["0", "1", "2", "3", "4"] and calls == [0, 2]
    assert not shards.exists()
    shards.mkdir()  # killed after the manifest but before the clean-up
    rows, _ = it.sharded("s", Prompt, [0, 1, 2, 3, 4], 2, compute)
    assert calls == [0, 2] and not shards.exists()
    rows, _ = IterDir(tmp_path, 1, "b").sharded("s", Prompt, [7], 2, compute)  # another config: recomputed
    assert [r.id for r in rows] == ["7"]


def test_hugging_face_dataset_rows_are_validated(tmp_path):
    import json

    from selfreward.data import read_dataset

    d = tmp_path / "ds"
    d.mkdir()
    rows = [{"prompt": "2x+3=11", "answer": 4, "tests": "assert True"}, {"prompt": "  "},
            {"prompt": [{"role": "user", "content": "hi"}]}]
    (d / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    good, bad = read_dataset(f"hf:{d}:train")
    assert [g.prompt for g in good] == ["2x+3=11", "hi"] and good[0].answer == "4"
    assert good[0].tests == "assert True"  # code tasks keep their tests, as from JSONL
    assert len(bad) == 1 and bad[0]["line"] == 1 and "no text in field 'prompt'" in bad[0]["reason"]
    with pytest.raises(DataError, match="could not be loaded"):
        read_dataset(f"hf:{tmp_path / 'missing'}:train")
    with pytest.raises(DataError, match="expected hf:NAME"):
        read_dataset("hf:only-a-name")
