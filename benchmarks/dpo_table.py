"""The DPO table (docs/training.md): SFT, DPO and DPO+NLL on oracle pairs and on the judge's pairs, DPO's epochs x
beta, and the Self-Rewarding recipe with one greedy judge, each a 3-iteration run of the default task, one after
another (never two at once: they share the cores).

    python benchmarks/dpo_table.py OUT_DIR              # every cell (~40 min on 2 cores)
    python benchmarks/dpo_table.py OUT_DIR dpo/oracle   # named cells only
    python benchmarks/dpo_table.py OUT_DIR --table      # the table from runs already in OUT_DIR

Oracle pairs (`selection.strategy=oracle`: a verifier-right chosen, a verifier-wrong rejected) take the judge out:
where DPO still falls on them, its settings are the cause. Cells resume: a finished one is read back, not rerun.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

# plain DPO (train.nll_weight=0) over epochs x beta
GRID = {f"dpo e{e} b{b}": f"train=dpo train.nll_weight=0 train.epochs={e} train.beta={b}" for e in (1, 2, 4)
        for b in (0.1, 0.5)}
OBJECTIVES = {"sft": "", "dpo": "train=dpo train.nll_weight=0", "dpo+nll": "train=dpo train.nll_weight=1",
              "dpo+nll e2": "train=dpo train.nll_weight=1 train.epochs=2", **GRID}
PAIRS = {"oracle": "selection.strategy=oracle", "judge": ""}
CELLS = {f"{o}/{p}": f"{args} {pairs}".split() for p, pairs in PAIRS.items() for o, args in OBJECTIVES.items()}
CELLS["self_rewarding n=1 greedy/judge"] = ["+experiment=self_rewarding", "train.nll_weight=0", "judge.rubric.n=1",
                                            "judge.rubric.temperature=0"]
CELLS["self_rewarding/judge"] = ["+experiment=self_rewarding"]  # train=dpo's NLL, the default now
CELLS["self_rewarding plain/judge"] = ["+experiment=self_rewarding", "train.nll_weight=0"]


def run_dir(out: Path, cell: str) -> Path:
    return out / cell.replace("/", "__").replace(" ", "_").replace("=", "")  # Hydra reads '=' in a value as syntax


def run(out: Path, cell: str) -> bool:
    """Run (or resume: a finished run is read back at once) one cell; a failed cell is said and skipped."""
    print(f"== {cell}: {' '.join(CELLS[cell])}", flush=True)
    r = subprocess.run([sys.executable, "-m", "selfreward", *CELLS[cell], "tracking.mode=disabled",
                        f"hydra.run.dir={run_dir(out, cell)}"], stdout=subprocess.DEVNULL)
    if r.returncode:
        print(f"!! {cell} failed (exit {r.returncode}): see {run_dir(out, cell)}", flush=True)
    return r.returncode == 0


def figures(run_dir: Path) -> dict[str, list]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]

    def col(key, fmt):
        return " ".join("-" if r.get(key) is None else fmt.format(r[key]) for r in rows)

    return {"eval": col("eval/accuracy", "{:.3f}"), "greedy": col("eval/greedy_accuracy", "{:.3f}"),
            "chosen": " ".join("{:+.2f}".format(r["train/logps_chosen_change_per_token"]) for r in rows
                               if r.get("train/logps_chosen_change_per_token") is not None) or "-",
            "pairs": col("select/pair_precision", "{:.2f}"), "rewards": " ".join(
                "{:.2f}".format(r["train/rewards_accuracy"]) for r in rows if r.get("train/rewards_accuracy")
                is not None) or "-"}


def table(out: Path) -> str:
    lines = ["| objective | pairs | eval/accuracy it0-it3 | greedy it0-it3 | chosen log-prob change per token | "
             "pair precision | train/rewards_accuracy |", "|---|---|---|---|---|---|---|"]
    for cell in CELLS:
        if (run_dir(out, cell) / "summary.json").exists():
            f = figures(run_dir(out, cell))
            objective, pairs = cell.split("/")
            lines.append(f"| {objective} | {pairs} | {f['eval']} | {f['greedy']} | {f['chosen']} | {f['pairs']} | "
                         f"{f['rewards']} |")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    out, names = Path(argv[0]), argv[1:]
    if names != ["--table"]:
        for cell in names or CELLS:
            if cell not in CELLS:
                raise SystemExit(f"unknown cell {cell!r}; cells: {', '.join(CELLS)}")
            run(out, cell)
    print(table(out))


if __name__ == "__main__":
    main(sys.argv[1:])
