"""8-bit state_dicts in torch.optim's format: the one documented call that
moves a run with state_dtype="8bit" back to torch (or to fusedopt without
8-bit states). Above the optimizer classes: it reads each rule's maps from
their declarations."""

from __future__ import annotations

from ._quant8_states import ABSMAX, dequantize
from .adagrad import Adagrad
from .adam import Adam
from .lion import Lion
from .sgd import SGD


def _signed_by_name() -> dict[str, bool]:
    """Each state name's map across fusedopt's rules (they agree: an
    exp_avg is signed in Adam and Lion alike)."""
    out: dict[str, bool] = {}
    for cls in (Adam, SGD, Adagrad, Lion):
        for name, signed in zip(cls.rule.states, cls.rule.signed):
            assert out.setdefault(name, signed) == signed, name
    return out


def dequantized_state_dict(state_dict: dict) -> dict:
    """An optimizer state_dict with 8-bit states turned into torch.optim's
    format: each ``name`` / ``name_absmax`` pair becomes the float32 state
    ``name`` of the param's shape. The result loads into torch.optim's
    counterpart (AdamW, SGD, Adagrad) or into a fusedopt optimizer without
    state_dtype="8bit". The 8-bit states of DTensor params (each rank's, as
    state_dict() or DCP's get_state_dict give them) become float32 DTensors
    laid out like their params, which torch.distributed.checkpoint can save and
    load under any sharding. The input is not modified."""
    signed_of = _signed_by_name()
    state = {}
    for pid, st in state_dict["state"].items():
        st = dict(st)
        for name in [k for k in st if k + ABSMAX in st]:
            if name not in signed_of:
                raise ValueError(f"fusedopt: no fusedopt optimizer keeps a state named '{name}'")
            codes, absmax = st[name], st.pop(name + ABSMAX)
            st[name] = dequantize(codes, absmax, signed_of[name])
        state[pid] = st
    return {**state_dict, "state": state}
