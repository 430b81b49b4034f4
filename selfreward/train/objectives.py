"""The training objectives, as scorers are listed: `train=NAME` picks the module whose `Config` the group extends.
A new objective is one module beside these (Config, prepare, rows_per_step, collate, loss, report: see `stage`) and
one line here."""

from selfreward.train import dpo, sft

OBJECTIVES = {"sft": sft, "dpo": dpo}
