"""Where metrics go: metrics.jsonl, summary.json, a printed table, PNG plots, and W&B (offline by default)."""

from __future__ import annotations

import json
import math
import os
import random
import uuid
from pathlib import Path

from selfreward.rundir.artifacts import read_jsonl, write_json, write_jsonl, write_text

# the columns of the per-iteration table printed after each iteration
TABLE = [
    ("iter", "iteration", "{:d}"),
    ("eval acc", "eval/accuracy", "{:.3f}"),
    ("greedy", "eval/greedy_accuracy", "{:.3f}"),
    ("sample acc", "sample/accuracy", "{:.3f}"),
    ("sel prec", "select/verified_precision", "{:.3f}"),
    ("pair prec", "select/pair_precision", "{:.3f}"),
    ("kept", "select/kept", "{:d}"),
    ("auc_w", "judge/auc_within", "{:.3f}"),
    ("pref", "judge/pref_accuracy", "{:.3f}"),
    ("auc", "judge/auc", "{:.3f}"),
    ("agree", "judge/agreement", "{:.3f}"),
    ("parse fail", "judge/parse_fail_rate", "{:.3f}"),
    ("loss", "train/loss", "{:.3f}"),
    ("time s", "time/iteration_s", "{:.0f}"),
]


def format_table(rows: list[dict]) -> str:
    def cell(row, key, fmt):
        v = row.get(key)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "-"
        return fmt.format(int(v) if fmt == "{:d}" else v)

    cols = [[h] + [cell(r, k, f) for r in rows] for h, k, f in TABLE]
    widths = [max(map(len, c)) for c in cols]
    lines = ["  ".join(c[i].rjust(w) for c, w in zip(cols, widths)) for i in range(len(rows) + 1)]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


class Tracker:
    """Logs one row per iteration locally and to W&B; keeps the W&B run id in the run directory."""

    def __init__(self, cfg, run_dir: Path, config_dict: dict):
        self.run_dir = Path(run_dir)
        self.cfg = cfg
        metrics = self.run_dir / "metrics.jsonl"
        self.rows: list[dict] = read_jsonl(metrics) if metrics.exists() else []
        summary = self.run_dir / "summary.json"
        previous = json.loads(summary.read_text()) if summary.exists() else {}
        self.alerts: list[dict] = previous.get("alerts", [])
        self.preflight: dict | None = previous.get("judge_preflight")  # set by the loop at iteration 0
        self.resumed = {r["iteration"] for r in self.rows}  # already in W&B from the interrupted run
        self.wandb = None
        if cfg.mode != "disabled":
            import wandb

            id_file = self.run_dir / "wandb_id"
            run_id = id_file.read_text().strip() if id_file.exists() else uuid.uuid4().hex[:8]
            write_text(id_file, run_id)
            os.environ.setdefault("WANDB_SILENT", "true")
            self.wandb = wandb.init(
                project=cfg.project, group=cfg.group, name=cfg.name, id=run_id, resume="allow", mode=cfg.mode,
                dir=str(self.run_dir), config=config_dict,
            )
            self.wandb.define_metric("iteration")
            self.wandb.define_metric("*", step_metric="iteration")

    def log(self, row: dict, examples: list[dict] | None = None, alerts: list[dict] | None = None,
            histograms: dict[str, list[float]] | None = None) -> None:
        self.rows = [r for r in self.rows if r["iteration"] != row["iteration"]] + [row]
        self.rows.sort(key=lambda r: r["iteration"])
        self.alerts = [a for a in self.alerts if a["iteration"] != row["iteration"]] + list(alerts or [])
        write_jsonl(self.run_dir / "metrics.jsonl", self.rows)
        write_json(self.run_dir / "summary.json", {"iterations": self.rows, "alerts": self.alerts,
                                                   "judge_preflight": self.preflight})
        print("\n" + format_table(self.rows), flush=True)
        if row["iteration"] == 0 and self.preflight:
            figures = ", ".join(f"{k}={v:.3f}" for k, v in self.preflight["figures"].items()) or "no figure"
            print(f"[selfreward] judge preflight: {self.preflight['judge']} ({figures})", flush=True)
        for a in alerts or []:
            value = "" if a["threshold"] is None else f": {a['metric']}={a['value']:.3f} (threshold {a['threshold']})"
            print(f"[selfreward] WARNING {a['kind']} alert at iteration {a['iteration']}{value}"
                  + (f": {a['note']}" if a.get("note") else ""), flush=True)
        if self.wandb is not None and row["iteration"] not in self.resumed:
            import wandb

            payload = {k: v for k, v in row.items() if isinstance(v, (int, float))}
            if examples:
                cols = list(examples[0].keys())
                payload["examples"] = wandb.Table(columns=cols, data=[[str(e[c]) for c in cols] for e in examples])
            for key, values in (histograms or {}).items():
                if values:
                    payload[key] = wandb.Histogram(values)
            self.wandb.log(payload)

    def finish(self) -> None:
        plot(self.rows, self.run_dir / "plots")
        if self.wandb is not None:
            self.wandb.summary.update({k: v for k, v in self.rows[-1].items() if isinstance(v, (int, float))})
            self.wandb.finish()


PLOTS = {
    "accuracy": ["eval/accuracy", "eval/greedy_accuracy", "sample/accuracy", "select/verified_precision",
                 "select/pair_precision"],
    "judge": ["judge/auc_within", "judge/pref_accuracy", "judge/auc", "judge/agreement", "judge/train_auc_within",
              "judge/consistency", "judge/retest_tau"],
    "diversity": ["collapse/answer_entropy", "collapse/distinct_2", "diversity/duplicate_rate",
                  "judge/train_saturation", "collapse/kl_to_seed"],
}


def plot(rows: list[dict], out: Path) -> None:
    """One PNG per panel, iteration on the x-axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    out.mkdir(parents=True, exist_ok=True)
    for name, keys in PLOTS.items():
        fig, ax = plt.subplots(figsize=(6, 4))
        for key in keys:
            pts = [(r["iteration"], r[key]) for r in rows
                   if isinstance(r.get(key), (int, float)) and not math.isnan(r[key])]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=key)
        ax.set_xlabel("iteration")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if name != "diversity":  # ratios to M0 may exceed 1
            ax.set_ylim(0, 1.05)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title(name)
        fig.tight_layout()
        fig.savefig(out / f"{name}.png", dpi=100)
        plt.close(fig)


def examples(rows: list, n: int, judgments: list | None = None, selected: list | None = None) -> list[dict]:
    """A few prompts with their candidates, scores and the chosen one, for the W&B table."""
    chosen = {(s.prompt_id, s.cand_idx) for s in selected or []}
    scores = {j.key: j.score for j in judgments or []}
    pids = sorted({r.prompt_id for r in rows})
    keep = set(random.Random(0).sample(pids, min(n, len(pids))))
    return [{"prompt": r.prompt, "candidate": r.text, "answer": r.answer, "correct": r.correct,
             "score": scores.get(r.key, getattr(r, "score", None)), "chosen": r.key in chosen}
            for r in rows if r.prompt_id in keep]
