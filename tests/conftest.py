import os

import pytest
import torch

import fusedopt._ops as ops

# True when this run exercises the native CPU kernels; the suite also runs with
# FUSEDOPT_DISABLE_NATIVE=1, where everything goes through fusedopt.reference.
NATIVE_CPU = ops.CPU_LIB.loaded
NATIVE_DISABLED = os.environ.get("FUSEDOPT_DISABLE_NATIVE", "") not in ("", "0")

requires_native_cpu = pytest.mark.skipif(
    not NATIVE_CPU, reason="the native CPU library is disabled in this run (FUSEDOPT_DISABLE_NATIVE=1)"
)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
