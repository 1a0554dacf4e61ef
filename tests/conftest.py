"""Suite-wide settings: hypothesis profiles (CI runs every property 2,000 times, new random draws each run); the
`numerics` marker on every test whose result depends on float kernels (CI re-runs those on torch's AVX2 and generic
code paths, `make test-numerics`, so a CPU unlike the submitter's shows up before a user meets it). tests/support
and scripts/ are on the path through pyproject's `pythonpath`."""

import collections
import hashlib
import os
import pathlib
import tempfile

import pytest
from hypothesis import HealthCheck, settings

HERE = pathlib.Path(__file__).parent
NUMERICS_GROUPS = ("kernels", "tiny_model")  # whole groups; single modules elsewhere mark themselves

settings.register_profile("dev", max_examples=300, deadline=None)
settings.register_profile(
    "ci", max_examples=2_000, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))


def _inductor_cache_for_this_isa() -> str:
    """A torch inductor cache per CPU and ATEN_CPU_CAPABILITY, inherited by every engine process the tests start.

    Inductor's FX-graph cache keys a graph without the vector width it generated code for, while
    ATEN_CPU_CAPABILITY changes that width: an entry written under avx2 (8 floats a vector), hit later in a native
    AVX-512 run, is compiled for 16-float vectors and writes past its buffers (SGLang's compiled top-k aborted with
    "double free or corruption" in a later run on the same machine). `make test-numerics` changes the capability,
    and CI may run where a session ran, so each (CPU, capability) gets its own directory."""
    try:
        flags = next(ln for ln in pathlib.Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags"))
    except (OSError, StopIteration):
        flags = ""
    cpu = hashlib.sha256(flags.encode()).hexdigest()[:8]
    capability = os.environ.get("ATEN_CPU_CAPABILITY") or "native"
    return os.path.join(tempfile.gettempdir(), f"torchinductor_glm_plugin_tests_{cpu}_{capability}")


os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", _inductor_cache_for_this_isa())


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
