"""Training: `fit` (the shared loop, the loss passed in), one module per objective (`sft.py`, `dpo.py`, listed in
`objectives.OBJECTIVES`), the stage that runs them and the job each training process runs."""
