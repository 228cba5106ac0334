"""fusedopt's optimizers: drop-ins for torch.optim.Adam, AdamW and SGD."""

from ._torch_format import dequantized_state_dict
from .adam import Adam, AdamW
from .sgd import SGD

__all__ = ["Adam", "AdamW", "SGD", "dequantized_state_dict"]
