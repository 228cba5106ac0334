"""Every distributed scenario, by name (imported by the worker and the tests)."""

import dist_fsdp  # noqa: F401  (registers its scenarios)
from dist_common import SCENARIOS, Ctx

__all__ = ["SCENARIOS", "Ctx"]
