"""Our FP8 expert methods inherit vLLM's `create_weights` but not its `__init__` (which selects a vLLM FP8 MoE
backend: none on a CPU). They mirror the attributes that `__init__` sets instead; these tests read the installed
vLLM's `__init__` and fail when it sets one we neither mirror nor know to be compute-only, so an upgrade that adds
one is caught here rather than as an AttributeError while a checkpoint loads."""

from __future__ import annotations

import ast
import inspect
import textwrap
from types import SimpleNamespace

import pytest
from drivers import requires_engine

requires_engine("vllm")
pytestmark = pytest.mark.no_model  # runs no model: also CI's vLLM GPU-wheel step, on every vLLM version there


def init_assignments(cls: type) -> set[str]:
    """The `self.<name>` attributes `cls.__init__` assigns (its own body, not its bases')."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls.__init__)))
    names = set()
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, (ast.AnnAssign, ast.AugAssign)) else []
        for target in targets:
            for t in target.elts if isinstance(target, ast.Tuple) else [target]:
                if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self":
                    names.add(t.attr)
    return names


def _ours(name: str):
    from glm_plugin.engines.vllm import fp8

    moe = SimpleNamespace(has_bias=False)
    if name == "block":
        return fp8.GlmFp8BlockMoEMethod(SimpleNamespace(weight_block_size=[128, 128]), SimpleNamespace(moe_config=moe))
    return fp8.GlmFp8ChannelMoEMethod(SimpleNamespace(), SimpleNamespace(), moe)


@pytest.mark.parametrize("layout", ["block", "channel"])
def test_we_set_every_attribute_vllms_init_sets(layout):
    from glm_plugin.engines.vllm import fp8

    ours = _ours(layout)
    vllm_class = next(c for c in type(ours).__mro__[1:] if c.__module__.startswith("vllm."))
    missing = init_assignments(vllm_class) - set(vars(ours)) - fp8.VLLM_COMPUTE_ONLY
    assert not missing, f"vLLM's {vllm_class.__name__}.__init__ now sets {sorted(missing)}: mirror them in fp8.py"


def test_the_reader_sees_plain_annotated_and_nested_assignments():
    class Probe:
        def __init__(self, flag):
            self.a = 1
            self.b: int = 2
            if flag:
                self.c, _other = 3, 4
                self.d = self.e = 5
            local = 6  # noqa: F841

    assert init_assignments(Probe) == {"a", "b", "c", "d", "e"}
