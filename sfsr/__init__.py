"""sfsr: simultaneous, fine-grained identity and expression control in face generation.

The core library is plain PyTorch/numpy and never imports Ray; the Ray glue lives in
jobs/ and deployments/ (see DESIGN.md).
"""

__version__ = "0.1.0"
