"""auditkit: make ML pretraining studies auditable.

Library first: every command of the CLI is a thin wrapper around one function
of these modules. `verify` and `replay-gate` never import torch.
"""

__version__ = "0.1.0"
