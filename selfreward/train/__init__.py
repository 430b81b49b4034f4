"""Training: `fit` (the shared loop, the loss passed in), one module per objective (`sft.py`), the stage."""
