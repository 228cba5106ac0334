"""A param's state and its route: what the optimizer keeps for each param (the
rule's states, full or 8-bit, its counter, its fp32 master, its stochastic
rounding key), made when first needed and checked on every rebuilt plan, and
which bucket, native or plain-torch, the param's update goes to. A mixin of
FusedOptimizer (_base.py), which holds the options it reads (state_dtype,
min_8bit_size, master_weights, stochastic_rounding, seed) and the rule."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _dtensor
from . import _quant8_states, _stochastic_rounding, _validate
from ._buckets import Route, layout_of, native_eligible


class ParamStateMixin:
    # -- hooks where torch's semantics differ per optimizer ---------------------------

    def _special_route(self, p: Tensor, g: Tensor, group: dict) -> Route | None:
        """A route other than the kernels for p's grad (SGD: sparse grads and
        grads of another dtype go to torch's SGD), or None; raises for grads
        the optimizer refuses (Adam: sparse)."""
        return None

    def _initial_state(self, p: Tensor, name: str, group: dict) -> Tensor:
        """A new state tensor ``name`` of p (zeros in the state dtype)."""
        return torch.zeros_like(p, dtype=self._state_dtype_for(p), memory_format=torch.preserve_format)

    def _rule_tensors(self, p: Tensor, group: dict, occurrence: int) -> tuple[dict | None, list, Tensor | None]:
        """p's state dict (None if it keeps none), its active state tensors
        (created if missing) and its counter: the rule's declared states and
        float32 step; SGD overrides it (its counter lives outside the state)."""
        rule = self.rule
        names = rule.states[: rule.active(group)]
        state = self.state[p]
        if not state:
            self._init_state(p, state, group)
        else:
            for name in rule.optional:
                if name in names and name not in state:
                    # switched on after the state was made (amsgrad): from zero, like its sibling
                    if name + "_absmax" in state or names[0] + "_absmax" in state:
                        self._store_state(p, state, name, torch.zeros(p.shape, dtype=torch.float32, device=p.device))
                    else:
                        state[name] = torch.zeros_like(state[names[0]])
        counter = state.get(rule.counter) if rule.counter is not None else None
        return state, _quant8_states.tensors_of(state, names), counter

    def _init_state(self, p: Tensor, state: dict, group: dict) -> None:
        """A param's first state: the rule's active states and its step."""
        rule = self.rule
        if rule.counter is not None:
            # the step lives on the param's device as a float32 0-dim tensor, as in
            # torch's fused/capturable mode: no host sync to advance it (a meta
            # param's lives on the CPU, as all of torch's non-capturable steps do)
            step_device = "cpu" if p.device.type == "meta" else p.device
            state[rule.counter] = torch.zeros((), dtype=torch.float32, device=step_device)
        for name in rule.states[: rule.active(group)]:
            self._store_state(p, state, name, self._initial_state(p, name, group))

    def _is_8bit(self, p: Tensor) -> bool:
        """Whether p's states are 8-bit: state_dtype="8bit", a real floating
        param of at least min_8bit_size elements. For a DTensor param, its
        global numel: every rank then agrees on the param's state format (its
        state_dict, which DCP saves as one tensor, has one format on every rank,
        and a rank with an empty or smaller shard keeps what the others keep)."""
        return (
            self.state_dtype == "8bit" and p.is_floating_point() and p.numel() >= self.min_8bit_size
        )

    def _store_state(self, p: Tensor, state: dict, name: str, value: Tensor) -> None:
        """state[name] = value, quantized (codes and name + "_absmax") for an 8-bit p."""
        if self._is_8bit(p):
            signed = self.rule.signed[self.rule.states.index(name)]
            state[name], state[name + "_absmax"] = _quant8_states.quantize(value, signed, p, name)
        else:
            state[name] = value

    def _route(self, p: Tensor, g: Tensor, group: dict, occurrence: int = 0) -> Route:
        """Creates p's state if needed and says which bucket p goes to.
        ``occurrence`` counts earlier listings of p in the group (tied weights)."""
        special = self._special_route(p, g, group)
        if special is not None:
            if self.stochastic_rounding:
                raise RuntimeError(
                    f"fusedopt.{type(self).__name__}: stochastic_rounding=True takes dense grads of the param's "
                    f"dtype (or float32); got a {'sparse ' if g.is_sparse else ''}{g.dtype} grad for a {p.dtype} param"
                )
            return special
        _validate.check_fused_device(p, group, self._fused_cuda_unsupported)
        rule = self.rule
        q8 = self._is_8bit(p) and rule.active(group) > 0  # (SGD without momentum keeps no state)
        state, moments, counter = self._rule_tensors(p, group, occurrence)
        tensors: dict[str, Tensor] = {f"state{k}": t for k, t in enumerate(moments)}
        names = list(rule.states[: len(moments) // 2 if q8 else len(moments)])
        keys = [] if q8 else names
        if counter is not None:
            tensors["counters"] = counter
            if rule.counter is not None:
                keys.append(rule.counter)
        master = self._master_for(p, state) if state is not None else None
        if master is not None:
            tensors["masters"] = master
            keys.append("master_param")
        _validate.check_state(p, g, state or {}, keys, self._step_minus_one_refused)
        local_names: frozenset = frozenset()
        if q8:
            _quant8_states.check_states(p, state, names)
            keys = names + [n + "_absmax" for n in names] + keys
            if _dtensor.is_dtensor(p):
                # the local shards' codes and their blocks' scales (_quant8_dtensor.py)
                from . import _quant8_dtensor

                moments = _quant8_dtensor.local_tensors(p, moments)
                local = {f"state{k}": t for k, t in enumerate(moments)}
                tensors.update(local)
                local_names = frozenset(local)
            native = (_quant8_states.native_eligible(_dtensor.local(p), _dtensor.local(g), moments)
                      and native_eligible(p, g, ()))
        else:
            native = native_eligible(p, g, moments)
        native = native and (master is None or master.is_contiguous())
        rounded = self.stochastic_rounding
        if rounded:
            # the params stored with stochastic rounding (_stochastic_rounding.py):
            # the native kernels (CPU and CUDA) for contiguous params, else the
            # plain-torch reference
            tensors["rounding_keys"] = self._rounding_key_for(p)
            keys.append(_stochastic_rounding.KEY)
            native = native and layout_of(p) == "contiguous"
            state = self.state[p]  # (SGD without momentum: the key made its state dict)
        if native:
            key = (p.device, "native", p.dtype, g.dtype, moments[0].dtype if moments else None, master is not None,
                   layout_of(p), rounded)
        else:
            # one reference bucket per device, master-or-not, 8-bit-or-not and
            # rounded-or-not, so its lists align
            key = (p.device, "reference", master is not None, q8, rounded)
        return Route(key, "native" if native else "reference", tensors, [(state, k) for k in keys], local_names)

    def _rounding_key_for(self, p: Tensor) -> Tensor:
        """p's generator state (made if missing, seeded by p's index in the
        optimizer's flattened param list), checked."""
        state = self.state[p]
        key = state.get(_stochastic_rounding.KEY)
        if key is None:
            index = self.__dict__.get("_param_index")
            if index is None:
                flat = (q for group in self.param_groups for q in group["params"])
                index = self.__dict__["_param_index"] = {}
                for i, q in enumerate(flat):
                    index.setdefault(id(q), i)
            seed = self.seed if self.seed is not None else torch.initial_seed()
            key = state[_stochastic_rounding.KEY] = _stochastic_rounding.new_key(seed, index[id(p)], p.device)
        _stochastic_rounding.check_key(p, key)
        return key

    # -- helpers for subclasses ------------------------------------------------------


    def _state_dtype_for(self, p: Tensor) -> torch.dtype:
        if p.is_complex() or not p.is_floating_point():
            return p.dtype
        if self.state_dtype == "8bit":
            return torch.float32  # 8-bit states are quantized from float32; small params keep these
        if self.state_dtype is not None:
            return self.state_dtype
        return torch.float32 if self._has_master(p) else p.dtype

    def _has_master(self, p: Tensor) -> bool:
        return self.master_weights and p.dtype in (torch.float16, torch.bfloat16)

    def _master_for(self, p: Tensor, state: dict) -> Tensor | None:
        if not self._has_master(p):
            return None
        master = state.get("master_param")
        if master is None:
            # float() keeps a dense param's strides, so the master shares its layout
            master = state["master_param"] = p.detach().float()
        return master
