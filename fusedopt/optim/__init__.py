"""fusedopt's optimizers: drop-ins for torch.optim.Adam, AdamW and SGD."""

from .adam import Adam, AdamW
from .sgd import SGD

__all__ = ["Adam", "AdamW", "SGD"]
