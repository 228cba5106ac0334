"""fusedopt: fused multi-tensor optimizers for PyTorch.

Drop-in replacements for torch.optim.Adam, AdamW, SGD and Adagrad, lion-pytorch's
Lion, torch.amp.GradScaler,
torch.nn.utils.clip_grad_norm_ and clip_grad_value_ whose work runs on native multi-tensor kernels
(CUDA, or SIMD on the CPU) and falls back to plain torch where no kernel serves
a tensor.
"""

from ._ops import backend_info
from .amp import GradScaler
from .clip import clip_grad_norm_, clip_grad_value_
from .optim import SGD, Adam, AdamW
from .optim.adagrad import Adagrad
from .optim.lion import Lion

__version__ = "0.1.0"

__all__ = ["Adam", "AdamW", "SGD", "Adagrad", "Lion", "GradScaler", "clip_grad_norm_", "clip_grad_value_", "backend_info", "__version__"]
