"""auditkit's bundled micro-pretraining runner (design after karpathy/autoresearch).

`train.py` is the entry point; `arch.py` is the torch-free architecture arithmetic
that `auditkit verify` uses to check checkpoints.
"""
