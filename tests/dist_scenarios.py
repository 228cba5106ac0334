"""Every distributed scenario, by name (imported by the worker and the tests)."""

import dist_fsdp  # noqa: F401  (each registers its scenarios)
import dist_dcp  # noqa: F401
import dist_fsdp_8bit  # noqa: F401
import dist_ddp_zero  # noqa: F401
import dist_mesh2d  # noqa: F401
import dist_compile  # noqa: F401
from dist_common import SCENARIOS, Ctx

__all__ = ["SCENARIOS", "Ctx"]
