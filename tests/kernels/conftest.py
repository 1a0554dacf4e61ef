"""Everything under tests/kernels is marked `kernels`; shared fixtures build the C++ CPU kernels once per session
(cached on disk across sessions) and give each test fresh random MoE inputs."""

from __future__ import annotations

import os

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


def pytest_collection_modifyitems(config, items):
    for item in items:
        if str(item.fspath).startswith(HERE):
            item.add_marker(pytest.mark.kernels)


@pytest.fixture(autouse=True)
def _fresh_dispatch(monkeypatch):
    """Each test starts from automatic dispatch and the kernel's own ISA choice."""
    from dispatch_state import reset_choices

    for var in ("GLM_PLUGIN_KERNEL", "GLM_PLUGIN_CPU_ISA", "GLM_PLUGIN_KERNEL_POISON"):
        monkeypatch.delenv(var, raising=False)
    reset_choices()
    yield
    reset_choices()


@pytest.fixture(scope="session")
def cpu_kernels():
    """The C++ CPU kernels, or a skip that names why they could not be built."""
    from glm_plugin.kernels import build

    if not build.load_cpu_extension():
        pytest.skip(f"C++ CPU kernels unavailable: {build.unavailable_reason()}")
    return build
