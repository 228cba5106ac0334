"""Whether a workload fits the device, and how its entries share the memory.

Every entry of a step gets its own copy of the params, grads and state (fp32:
16 B per param for AdamW, 20 B for the AMP step, plus the temporaries of the
slower implementations), cloned from one source copy (8 B per param) so that
all start from the same numbers. For GPT-2 small that is ~2.5 GB an entry;
for a 1B decoder ~25 GB, more than a laptop or a 24 GB GPU has. So:

  resident       all entries fit at once: built once, alternated every round
  one-at-a-time  one fits: each round builds, warms and times one entry after
                 the other, freeing each before the next
  skip           not even one fits: the workload is left out, with a message
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from .steps import Step
from .workloads import Workload

SOURCE_BYTES_PER_PARAM = 8  # the source params and grads every entry is cloned from
# what torch's foreach path and fusedopt's fallback allocate during a step
# (sqrt(v), bias-corrected copies): up to two more tensors of the params' size.
# Peak RSS measured over the entries with torch 2.13 on the CPU: 17-23 B/param
# for the AdamW step, 21-25 for the AMP step, under the 24 and 28 counted here.
TEMPORARY_BYTES_PER_PARAM = 8
RESIDENT_SHARE = 0.6  # all entries at once only within 60% of what is free: the machine may be shared
ONE_SHARE = 0.85


@dataclass(frozen=True)
class Plan:
    mode: str  # "resident", "one-at-a-time" or "skip"
    note: str


def available_bytes(device: str) -> int | None:
    """Free memory on `device` now (None: unknown, assumed enough)."""
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        return torch.cuda.mem_get_info(torch.device(device))[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def plan(step: Step, wl: Workload, entries: int, device: str, free: int | None = None) -> Plan:
    free = available_bytes(device) if free is None else free
    if free is None:
        return Plan("resident", "free memory unknown: all entries built at once")
    per_entry = (step.state_bytes_per_param + TEMPORARY_BYTES_PER_PARAM) * wl.bytes_scale * wl.numel
    source = SOURCE_BYTES_PER_PARAM * wl.bytes_scale * wl.numel
    gb = 1e9
    if source + entries * per_entry <= RESIDENT_SHARE * free:
        return Plan("resident", f"all {entries} entries in memory at once")
    if source + per_entry <= ONE_SHARE * free:
        return Plan("one-at-a-time",
                    f"{entries} entries need ~{(source + entries * per_entry) / gb:.1f} GB at once, "
                    f"{free / gb:.1f} GB free: built one at a time in every round")
    return Plan("skip",
                f"skipped: one implementation needs ~{(source + per_entry) / gb:.1f} GB (params, grads, state "
                f"and temporaries, {step.state_bytes_per_param + TEMPORARY_BYTES_PER_PARAM} B per param for "
                f"{wl.numel / 1e6:.0f}M params, and the {SOURCE_BYTES_PER_PARAM} B/param copy each is cloned "
                f"from); {device} has {free / gb:.1f} GB free")
