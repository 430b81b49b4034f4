"""Training: `fit` (the shared loop, the loss passed in), one module per objective (`sft.py`, `dpo.py`), the stage.

Every other module here is an objective: `train=NAME` picks `NAME.py` by the schema (`Config`) it defines.
"""

MACHINERY = ("fit", "stage", "job")  # the modules that are not objectives
