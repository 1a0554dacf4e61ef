"""Suite-wide settings: hypothesis profiles (CI runs every property 10^4 times); tests/support is importable; the
`numerics` marker on every test whose result depends on float kernels (CI re-runs those on torch's AVX2 and generic
code paths, `make test-numerics`, so a CPU unlike the submitter's shows up before a user meets it)."""

import collections
import os
import pathlib
import sys

import pytest
from hypothesis import HealthCheck, settings

HERE = pathlib.Path(__file__).parent
NUMERICS_GROUPS = ("kernels", "tiny_model")  # whole groups; single modules elsewhere mark themselves

settings.register_profile("dev", max_examples=300, deadline=None)
settings.register_profile(
    "ci", max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))

sys.path.insert(0, str(HERE / "support"))  # test fixtures shared by several groups


def pytest_configure(config):
    config.addinivalue_line("markers", "numerics: compares floating-point results (re-run under ATEN_CPU_CAPABILITY)")


_SECONDS_PER_GROUP: collections.Counter = collections.Counter()


def _group(path) -> str:
    """The test directory a test file belongs to (cli, e2e, kernels, ...)."""
    return pathlib.Path(str(path)).relative_to(HERE).parts[0]


def pytest_runtest_logreport(report):
    _SECONDS_PER_GROUP[_group(HERE.parent / report.nodeid.split("::")[0])] += report.duration


def pytest_terminal_summary(terminalreporter):
    """Where the suite's time goes, per test directory (setup, call and teardown): CI prints it after the run."""
    if _SECONDS_PER_GROUP:
        rows = ", ".join(f"{group} {seconds:.0f} s" for group, seconds in _SECONDS_PER_GROUP.most_common())
        terminalreporter.write_line(f"time per directory: {rows}")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if _group(item.fspath) in NUMERICS_GROUPS:
            item.add_marker(pytest.mark.numerics)
