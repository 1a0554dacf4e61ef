"""vLLM loads the plugin through `vllm.general_plugins`, and its own lookups then answer with our parser classes."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points

import pytest
from drivers import prompt_ids, requires_engine, vllm_parser_class, vllm_request
from fixtures import TOOLS, tool

from toy_tokenizer import toy_glm_tokenizer
from glm_plugin.formats import ThinkingStart, ToolSchemaError

requires_engine("vllm")
pytestmark = pytest.mark.no_model  # runs no model: also CI's vLLM GPU-wheel step


@pytest.fixture(scope="module", autouse=True)
def plugins_loaded():
    import vllm.plugins

    vllm.plugins.load_general_plugins()


@pytest.fixture(scope="module")
def tokenizer():
    return toy_glm_tokenizer("glm47")


def test_entry_point_is_installed():
    (ep,) = [ep for ep in entry_points(group="vllm.general_plugins") if ep.name == "glm_plugin"]
    assert ep.value == "glm_plugin.engines.vllm:register"


def test_managers_answer_with_our_classes():
    from vllm.reasoning import ReasoningParserManager
    from vllm.tool_parsers import ToolParserManager

    from glm_plugin.engines.vllm.reasoning import GlmReasoningParser
    from glm_plugin.engines.vllm.tools import GlmToolParser

    for name in ("glm45", "glm47"):
        assert ToolParserManager.get_tool_parser(name) is GlmToolParser
        assert ReasoningParserManager.get_reasoning_parser(name) is GlmReasoningParser


def test_parser_manager_composes_our_parsers(tokenizer):
    from glm_plugin.engines.vllm.reasoning import GlmReasoningParser
    from glm_plugin.engines.vllm.tools import GlmToolParser

    parser_cls = vllm_parser_class(tokenizer, tool="glm47", reasoning="glm45")
    assert parser_cls.tool_parser_cls is GlmToolParser
    assert parser_cls.reasoning_parser_cls is GlmReasoningParser
    parser = parser_cls(tokenizer, None)
    assert parser._engine_based, "vLLM must feed us deltas, not re-concatenated text"


def test_register_again_changes_nothing():
    from vllm.tool_parsers import ToolParserManager

    from glm_plugin.engines import vllm as plugin

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("vllm.glm_plugin").addHandler(handler)
    try:
        before = dict(ToolParserManager.lazy_parsers), dict(ToolParserManager.tool_parsers)
        plugin.register()
        plugin.register()
        assert (dict(ToolParserManager.lazy_parsers), dict(ToolParserManager.tool_parsers)) == before
        assert records == []
    finally:
        logging.getLogger("vllm.glm_plugin").removeHandler(handler)


def test_adjust_request_keeps_special_tokens(tokenizer):
    request = vllm_request(TOOLS, {})
    # vLLM's default: True on 0.32; None on 0.33 (decided later, to True, unless a parser says otherwise).
    assert request.skip_special_tokens in (True, None)
    parser = vllm_parser_class(tokenizer)(tokenizer, request.tools)
    assert parser.adjust_request(request).skip_special_tokens is False


@pytest.mark.parametrize(
    ("template", "kwargs", "start"),
    [
        ("glm47", {}, ThinkingStart.REASONING),
        ("glm47", {"enable_thinking": False}, ThinkingStart.CONTENT),
        ("glm45", {}, ThinkingStart.MODEL),
        ("glm45", {"enable_thinking": False}, ThinkingStart.CONTENT),
    ],
)
def test_start_state_from_prompt_and_from_template(template, kwargs, start):
    tok = toy_glm_tokenizer(template)
    prompt = prompt_ids(tok, kwargs)
    parser_cls = vllm_parser_class(tok)
    # Without the prompt: the checkpoint's template rendered with the request's kwargs.
    assert parser_cls(tok, None, chat_template_kwargs=kwargs).reasoning_parser.start is start
    # Non-streaming: the prompt ids, through DelegatingParser.set_prompt_token_ids.
    parser = parser_cls(tok, None, chat_template_kwargs={})
    parser.set_prompt_token_ids(prompt)
    assert parser.reasoning_parser.start is start
    # Streaming: vLLM asks is_reasoning_end(prompt), and only when False calls the prompt hook.
    reasoning = parser_cls(tok, None, chat_template_kwargs={}).reasoning_parser
    assert reasoning.is_reasoning_end(prompt) is (start is ThinkingStart.CONTENT)
    if start is not ThinkingStart.CONTENT:
        reasoning.adjust_initial_state_from_prompt(prompt)
        assert reasoning.start is start


def test_prefilled_prompt_sets_the_start():
    tok = toy_glm_tokenizer("glm47")
    prompt = prompt_ids(tok, {})
    reasoning = vllm_parser_class(tok)(tok, None).reasoning_parser
    prefilled = prompt + tok.encode("The weather is </think>", add_special_tokens=False)
    reasoning.set_prompt_token_ids(prefilled)
    assert reasoning.start is ThinkingStart.CONTENT
    reasoning.set_prompt_token_ids(prompt + tok.encode("Let me think", add_special_tokens=False))
    assert reasoning.start is ThinkingStart.REASONING


def test_reasoning_end_and_content_ids_for_structured_output(tokenizer):
    """vLLM's structured-output manager gates the grammar on these, over prompt + generated ids."""
    reasoning = vllm_parser_class(tokenizer)(tokenizer, None).reasoning_parser
    prompt = prompt_ids(tokenizer, {})
    thinking = tokenizer.encode("let me think", add_special_tokens=False)
    answer = tokenizer.encode('{"a": 1}', add_special_tokens=False)
    close = tokenizer.convert_tokens_to_ids("</think>")
    call = tokenizer.convert_tokens_to_ids("<tool_call>")
    assert not reasoning.is_reasoning_end(prompt + thinking)
    assert reasoning.is_reasoning_end(prompt + thinking + [close] + answer)
    assert reasoning.is_reasoning_end_streaming(prompt + thinking + [close], [close])
    assert not reasoning.is_reasoning_end_streaming(prompt + thinking, thinking[-1:])
    assert reasoning.extract_content_ids(thinking + [close] + answer) == answer
    invocation = [call] + tokenizer.encode("get_time", add_special_tokens=False) + [
        tokenizer.convert_tokens_to_ids("</tool_call>")]
    assert reasoning.extract_content_ids(thinking + invocation) == invocation  # a call ends reasoning; its tag is content
    assert reasoning.is_reasoning_end(prompt + thinking + invocation)
    # Prose about the tag is not a call (R4.2), by the same rule as ThinkingSplitter.
    prose = thinking + [call] + tokenizer.encode(" tags, then a name.", add_special_tokens=False)
    assert not reasoning.is_reasoning_end(prompt + prose)
    assert reasoning.extract_content_ids(prose) == []
    assert reasoning.count_reasoning_tokens(thinking + [close] + answer) == len(thinking)
    # Streamed with continuous usage stats: called with every prefix; resumes its scan, same answers.
    output = thinking + invocation + answer
    fresh = [vllm_parser_class(tokenizer)(tokenizer, None).reasoning_parser.count_reasoning_tokens(output[:k])
             for k in range(len(output) + 1)]
    streamed = vllm_parser_class(tokenizer)(tokenizer, None).reasoning_parser
    assert [streamed.count_reasoning_tokens(output[:k]) for k in range(len(output) + 1)] == fresh
    assert fresh[-1] == len(thinking)
    # GLM-4.5: the model answers without opening <think>; reasoning has ended once it writes anything.
    tok45 = toy_glm_tokenizer("glm45")
    reasoning45 = vllm_parser_class(tok45)(tok45, None).reasoning_parser
    prompt45 = prompt_ids(tok45, {})
    assert not reasoning45.is_reasoning_end(prompt45)
    assert reasoning45.is_reasoning_end(prompt45 + answer)
    opened = [tok45.convert_tokens_to_ids("<think>")] + thinking
    assert not reasoning45.is_reasoning_end(prompt45 + opened)
    assert reasoning45.count_reasoning_tokens(opened + [tok45.convert_tokens_to_ids("</think>")] + answer) == len(
        thinking)
    assert vllm_parser_class(tok45)(tok45, None).reasoning_parser.count_reasoning_tokens(answer) == 0


def test_tool_choice_none_and_no_tools_leave_markup_in_content(tokenizer):
    text = "<tool_call>get_time</tool_call>"
    request = vllm_request(TOOLS, {})
    request.tool_choice = "none"
    parser = vllm_parser_class(tokenizer)(tokenizer, request.tools, chat_template_kwargs={"enable_thinking": False})
    parser.set_prompt_token_ids(prompt_ids(tokenizer, {"enable_thinking": False}))
    assert parser.parse(text, request, enable_auto_tools=True) == (None, text, [])


def test_malformed_schema_is_one_clear_error(tokenizer):
    from glm_plugin.engines.vllm.tools import GlmToolParser

    bad = tool("broken", {"x": {"type": "string"}})
    bad["function"]["parameters"]["properties"] = ["x"]
    request = vllm_request([bad], {})
    with pytest.raises(ToolSchemaError, match="broken"):
        GlmToolParser(tokenizer, request.tools)


def test_later_turns_read_only_the_current_turn():
    """Reasoning markers of earlier turns in the prompt do not decide the current one (docs/formats.md R6.5)."""
    tok = toy_glm_tokenizer("glm47")
    history = ("[gMASK]<sop><|user|>weather?<|assistant|><think>need a call</think><tool_call>get_weather<arg_key>city"
               "</arg_key><arg_value>Paris</arg_value></tool_call><|observation|><tool_response>sunny</tool_response>")
    reasoning = vllm_parser_class(tok)(tok, None).reasoning_parser
    for tail, start, ended in (("<|assistant|><think>", ThinkingStart.REASONING, False),
                               ("<|assistant|></think>", ThinkingStart.CONTENT, True)):
        prompt = tok.encode(history + tail, add_special_tokens=False)
        reasoning.set_prompt_token_ids(prompt)
        assert reasoning.start is start
        assert reasoning.is_reasoning_end(prompt) is ended


# What each vLLM process imports first after loading the plugins: the API server its OpenAI protocol module (on
# vLLM 0.33 that reaches the quantization package while vllm.config is half-initialised), a worker its
# quantization registry, then each looks names up through vLLM's own registries.
IMPORT_ORDER = textwrap.dedent(
    """
    import json, logging, sys
    records = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.DEBUG)
    import vllm.plugins
    vllm.plugins.load_general_plugins()
    if sys.argv[1] == "api_server":
        import vllm.entrypoints.openai.chat_completion.protocol
    else:
        import vllm.model_executor.layers.quantization
    from vllm.model_executor.layers.quantization import get_quantization_config
    from vllm.model_executor.model_loader import weight_utils
    from vllm.model_executor.models.registry import ModelRegistry
    from vllm.tool_parsers import ToolParserManager
    ours = [r for r in records if "glm_plugin" in r.name or "glm_plugin" in r.getMessage()]
    print("RESULT " + json.dumps({
        "fp8": get_quantization_config("fp8").__name__,
        "compressed_tensors": weight_utils.get_quantization_config("compressed-tensors").__name__,
        "model": ModelRegistry._try_load_model_cls("Glm4MoeForCausalLM").__module__,
        "tool_parser": ToolParserManager.get_tool_parser("glm47").__name__,
        "warnings": [f"{r.levelname}: {r.getMessage()}" for r in ours if r.levelno >= logging.WARNING],
    }))
    """
)


@pytest.mark.parametrize("order", ["api_server", "worker"])
def test_no_warning_and_our_classes_in_every_import_order(order):
    env = dict(os.environ, VLLM_TARGET_DEVICE="cpu", HF_HUB_OFFLINE="1")  # the GPU wheel picks its CPU platform
    for name in ("GLM_PLUGIN_DISABLE", "GLM_PLUGIN_GPU_KERNELS", "VLLM_PLUGINS"):
        env.pop(name, None)
    proc = subprocess.run([sys.executable, "-c", IMPORT_ORDER, order], capture_output=True, text=True, env=env,
                          timeout=300)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    assert json.loads(lines[-1][len("RESULT "):]) == {
        "fp8": "GlmFp8Config", "compressed_tensors": "GlmCompressedTensorsConfig",  # CPU: the policy gives us
        "model": "glm_plugin.engines.vllm.model", "tool_parser": "GlmToolParser", "warnings": []}
