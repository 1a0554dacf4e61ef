"""SGLang loads the plugin through `sglang.srt.plugins`, and its own lookups then answer with our detectors."""

from __future__ import annotations

import logging
from importlib.metadata import entry_points

import pytest
from drivers import requires_engine, sglang_tools
from fixtures import TOOLS

from toy_tokenizer import toy_glm_tokenizer
from glm_plugin.formats import ThinkingStart

requires_engine("sglang")
pytestmark = pytest.mark.no_model  # runs no model: also CI's vLLM GPU-wheel step


@pytest.fixture(scope="module", autouse=True)
def plugins_loaded():
    import sglang.srt.plugins

    sglang.srt.plugins.load_plugins()


def test_entry_point_is_installed():
    (ep,) = [ep for ep in entry_points(group="sglang.srt.plugins") if ep.name == "glm_plugin"]
    assert ep.value == "glm_plugin.engines.sglang:register"


def test_lookups_answer_with_our_classes():
    from sglang.srt.function_call.function_call_parser import FunctionCallParser
    from sglang.srt.function_call.glm4_moe_detector import Glm4MoeDetector
    from sglang.srt.function_call.glm47_moe_detector import Glm47MoeDetector
    from sglang.srt.parser.reasoning_parser import Glm45Detector, ReasoningParser

    from glm_plugin.engines.sglang.tools import Glm45ToolDetector, Glm47ToolDetector
    from glm_plugin.engines.sglang.reasoning import GlmReasoningDetector

    tools = sglang_tools(TOOLS)
    assert type(FunctionCallParser(tools, "glm47").detector) is Glm47ToolDetector
    assert type(FunctionCallParser(tools, "glm45").detector) is Glm45ToolDetector
    for name in ("glm45", "glm47"):
        assert type(ReasoningParser(name).detector) is GlmReasoningDetector
    # SGLang keys grammar and structural-tag behaviour on its own classes; ours are still those.
    assert issubclass(Glm47ToolDetector, Glm47MoeDetector)
    assert issubclass(Glm45ToolDetector, Glm4MoeDetector)
    assert issubclass(GlmReasoningDetector, Glm45Detector)


def test_glm47_grammar_path_still_works():
    """`FunctionCallParser` special-cases Glm47MoeDetector instances: the template grammar must still come out."""
    from sglang.srt.function_call.function_call_parser import FunctionCallParser

    parser = FunctionCallParser(sglang_tools(TOOLS), "glm47")
    assert parser.detector.use_full_assistant_constraint is True
    kind, grammar = parser.get_structure_constraint("required")
    assert kind == "full_assistant_ebnf" and "get_weather" in grammar


def test_register_again_changes_nothing():
    from sglang.srt.function_call.function_call_parser import FunctionCallParser
    from sglang.srt.parser.reasoning_parser import ReasoningParser

    from glm_plugin.engines import sglang as plugin

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger(plugin.__name__).addHandler(handler)
    try:
        before = dict(FunctionCallParser.ToolCallParserEnum), dict(ReasoningParser.DetectorMap)
        plugin.register()
        plugin.register()
        assert (dict(FunctionCallParser.ToolCallParserEnum), dict(ReasoningParser.DetectorMap)) == before
        assert records == []
    finally:
        logging.getLogger(plugin.__name__).removeHandler(handler)


@pytest.mark.parametrize(
    ("template", "force_reasoning", "start"),
    [
        ("glm47", True, ThinkingStart.REASONING),
        ("glm47", False, ThinkingStart.CONTENT),
        ("glm47", None, ThinkingStart.REASONING),
        ("glm45", True, ThinkingStart.MODEL),
        ("glm45", False, ThinkingStart.CONTENT),
    ],
)
def test_start_state_from_the_template(template, force_reasoning, start):
    from sglang.srt.parser.reasoning_parser import ReasoningParser

    parser = ReasoningParser("glm45", force_reasoning=force_reasoning, tokenizer=toy_glm_tokenizer(template))
    assert parser.detector.start is start


def test_start_state_without_a_tokenizer_and_after_a_prefill():
    from sglang.srt.entrypoints.openai.protocol import ChatCompletionRequest
    from sglang.srt.parser.reasoning_parser import ReasoningParser

    assert ReasoningParser("glm45", force_reasoning=True).detector.start is ThinkingStart.REASONING
    assert ReasoningParser("glm45").detector.start is ThinkingStart.MODEL
    request = ChatCompletionRequest(
        model="glm", continue_final_message=True,
        messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Sure.</think>"}],
    )
    parser = ReasoningParser("glm45", force_reasoning=True, request=request, tokenizer=toy_glm_tokenizer("glm47"))
    assert parser.detector.start is ThinkingStart.CONTENT


def test_two_calls_in_the_last_delta_are_both_delivered():
    """SGLang's own GLM detectors keep the second call buffered and lose it at stream end (docs/formats.md R2.2)."""
    from sglang.srt.function_call.function_call_parser import FunctionCallParser

    parser = FunctionCallParser(sglang_tools(TOOLS), "glm47")
    text = ("<tool_call>get_time</tool_call><tool_call>get_weather<arg_key>city</arg_key><arg_value>Oslo"
            "</arg_value></tool_call>")
    _, calls = parser.parse_stream_chunk(text)
    _, end_calls = parser.parse_stream_end()
    names = [call.name for call in calls + end_calls if call.name]
    assert names == ["get_time", "get_weather"]


def test_no_tools_leaves_markup_in_content():
    from sglang.srt.function_call.function_call_parser import FunctionCallParser

    text = "<tool_call>get_time</tool_call>"
    assert FunctionCallParser([], "glm47").parse_non_stream(text) == (text, [])


def test_reasoning_held_back_when_not_streamed():
    """`stream_reasoning=False` (a request's `stream_reasoning: false`): reasoning arrives whole, when it ends."""
    from sglang.srt.parser.reasoning_parser import ReasoningParser

    from toy_tokenizer import token_deltas

    tok = toy_glm_tokenizer("glm47")
    parser = ReasoningParser("glm45", stream_reasoning=False, force_reasoning=True, tokenizer=tok)
    chunks = [parser.parse_stream_chunk(text) for text, _ in token_deltas(tok, "let me think</think>The answer.")]
    chunks.append(parser.parse_stream_end())
    assert [reasoning for reasoning, _ in chunks if reasoning] == ["let me think"]
    assert "".join(normal or "" for _, normal in chunks) == "The answer."


def test_force_nonempty_content_turns_unfinished_thinking_into_the_answer():
    from sglang.srt.entrypoints.openai.protocol import ChatCompletionRequest
    from sglang.srt.parser.reasoning_parser import ReasoningParser

    request = ChatCompletionRequest(model="glm", messages=[{"role": "user", "content": "hi"}],
                                    chat_template_kwargs={"force_nonempty_content": True})
    tok = toy_glm_tokenizer("glm47")
    parser = ReasoningParser("glm45", force_reasoning=True, request=request, tokenizer=tok)
    assert parser.parse_non_stream("The answer is 4.") == ("", "The answer is 4.")
    assert parser.parse_non_stream("hmm</think>The answer is 4.") == ("hmm", "The answer is 4.")


def test_a_second_think_close_is_left_to_the_tool_stage_only_when_sglang_says_one_follows(caplog):
    """SGLang 0.5.23 passes `tool_call_parser_active=True` to our detector when a tool parser reads its content; then
    the tool stage, which knows argument values, drops the tag. Told nothing, no tool stage follows: we drop it."""
    from sglang.srt.parser.reasoning_parser import ReasoningParser

    from glm_plugin.engines.sglang import reasoning

    tok = toy_glm_tokenizer("glm47")
    text = "Sum.</think>It is 2.</think>It is 2."
    alone = ReasoningParser("glm45", force_reasoning=True, tokenizer=tok)
    assert alone.parse_non_stream(text) == ("Sum.", "It is 2.It is 2.")
    before_tools = ReasoningParser("glm45", force_reasoning=True, tokenizer=tok, tool_call_parser_active=True)
    assert before_tools.parse_non_stream(text) == ("Sum.", "It is 2.</think>It is 2.")
    # An SGLang that cannot say: the tag is kept (a tool stage may follow, and a value must not lose it), said once.
    reasoning._engine_reports_tool_stage.cache_clear()
    try:
        with pytest.MonkeyPatch.context() as patch, caplog.at_level(logging.INFO):
            patch.setattr(reasoning, "ReasoningParser", type("OlderParser", (), {"__init__": lambda self, model: None}))
            unsure = [ReasoningParser("glm45", force_reasoning=True, tokenizer=tok) for _ in range(2)]
        assert all(p.parse_non_stream(text) == ("Sum.", "It is 2.</think>It is 2.") for p in unsure)
        assert sum("tool stage follows" in r.getMessage() for r in caplog.records) == 1
    finally:
        reasoning._engine_reports_tool_stage.cache_clear()
