"""Suite-wide settings: hypothesis profiles (CI runs every property 10^4 times); tests/support is importable."""

import os
import pathlib
import sys

from hypothesis import HealthCheck, settings

settings.register_profile("dev", max_examples=300, deadline=None)
settings.register_profile(
    "ci", max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))

sys.path.insert(0, str(pathlib.Path(__file__).parent / "support"))  # test fixtures shared by several groups
