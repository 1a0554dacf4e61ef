"""The format cases through both engines' own interfaces, streaming and not: identical results everywhere.

For every case (GLM-4.5/4.7 layouts, and GLM-5.x cases rendered through the publisher's templates): vLLM `parse()` and `parse_delta()` (one token, three tokens and the whole text per delta) and SGLang
`parse_non_stream()` and `parse_stream_chunk()` (same chunkings) must all give the case's expected turn, and the
same arguments JSON, byte for byte, as `glm_plugin.formats.parse_output`.
"""

from __future__ import annotations

import json

import pytest
from drivers import Turn, requires_engine, sglang_stream, sglang_whole, vllm_stream, vllm_whole
from fixtures import CASES, GLM5_CASES
from whole_output import parse_output


requires_engine("vllm")
requires_engine("sglang")
pytestmark = pytest.mark.no_model  # runs no model: also CI's vLLM GPU-wheel step


@pytest.fixture(scope="module", autouse=True)
def plugins_loaded():
    import sglang.srt.plugins
    import vllm.plugins

    vllm.plugins.load_general_plugins()
    sglang.srt.plugins.load_plugins()


def core_turn(case) -> Turn:
    result = parse_output(case.text, case.tools, case.start)
    return Turn.of(result.reasoning, result.content, [(c.name, c.arguments_json) for c in result.tool_calls])


def check(case, turn: Turn) -> None:
    assert (turn.reasoning, turn.content) == (case.reasoning, case.content)
    assert [(name, json.loads(args)) for name, args in turn.calls] == case.calls
    assert turn == core_turn(case)  # the same argument JSON text too


PATHS = {
    "vllm-whole": lambda case: vllm_whole(case),
    "vllm-whole-no-prompt": lambda case: vllm_whole(case, with_prompt=False),
    "vllm-token": lambda case: vllm_stream(case, 1),
    "vllm-3-tokens": lambda case: vllm_stream(case, 3),
    "vllm-one-delta": lambda case: vllm_stream(case, 1 << 20),
    "sglang-whole": lambda case: sglang_whole(case),
    "sglang-token": lambda case: sglang_stream(case, 1),
    "sglang-3-tokens": lambda case: sglang_stream(case, 3),
    "sglang-one-delta": lambda case: sglang_stream(case, 1 << 20),
}


ALL_CASES = CASES + GLM5_CASES


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("case", ALL_CASES, ids=[case.name for case in ALL_CASES])
def test_case_through_engine(case, path):
    check(case, PATHS[path](case))


@pytest.mark.parametrize("case", ALL_CASES, ids=[case.name for case in ALL_CASES])
def test_glm45_names_parse_the_same(case):
    """`--tool-call-parser glm45` / `--reasoning-parser glm47` are the same parsers under the other names."""
    check(case, vllm_stream(case, 2, tool="glm45", reasoning="glm47"))
    check(case, sglang_stream(case, 2, tool="glm45", reasoning="glm47"))
    check(case, sglang_whole(case, tool="glm45", reasoning="glm47"))
