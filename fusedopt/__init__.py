"""fusedopt: fused multi-tensor optimizers for PyTorch.

Drop-in replacements for torch.optim.Adam, AdamW and SGD whose step runs on
native multi-tensor kernels (CUDA, or SIMD on the CPU) and falls back to plain
torch where no kernel serves a tensor.
"""

from ._ops import backend_info
from .optim import SGD, Adam, AdamW

__version__ = "0.1.0"

__all__ = ["Adam", "AdamW", "SGD", "backend_info", "__version__"]
