"""Where reasoning, content and calls meet: structure never reaches what the user reads, text keeps every character.

Field cases (the report's id in the name) and properties: for generated turns of each shape, every chunking puts
each boundary in the same place as the whole text (docs/formats.md, "Boundaries").
"""

from __future__ import annotations

import pytest
from glm_render import chunkings
from hypothesis import given
from hypothesis import strategies as st

from glm_plugin.formats import ParsedOutput, ThinkingStart, collect_events
from whole_output import GlmOutputParser, parse_output

R, C, M = ThinkingStart.REASONING, ThinkingStart.CONTENT, ThinkingStart.MODEL


def fn(name, **props):
    return {"type": "function", "function": {"name": name, "parameters": {"type": "object", "properties": props}}}


TOOLS = [fn("read_file", path={"type": "string"}), fn("get_time")]
READ_A = "<tool_call>read_file<arg_key>path</arg_key><arg_value>a.txt</arg_value></tool_call>"
READ_A_45 = "<tool_call>read_file\n<arg_key>path</arg_key>\n<arg_value>a.txt</arg_value>\n</tool_call>"
CALL_A = [("read_file", {"path": "a.txt"})]


def streamed(text, tools, start, chunks):
    parser = GlmOutputParser(tools, start)
    events = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    events.extend(parser.finish())
    return collect_events(events)


def parse(text, start, tools=TOOLS) -> ParsedOutput:
    whole = parse_output(text, tools, start)
    for size in (1, 2, 3, 5, 8):
        assert streamed(text, tools, start, [text[i:i + size] for i in range(0, len(text), size)]) == whole, size
    return whole


def turn(result):
    return result.reasoning, result.content, [(c.name, c.arguments) for c in result.tool_calls]


# ---- the closing tag of a block a call was written in --------------------------------------------------------

def test_vllm_46040_think_close_after_a_call_made_inside_reasoning_is_dropped():
    text = "\n<think>Reading it first.\n" + READ_A_45 + "\n</think>\n"
    assert turn(parse(text, M)) == ("Reading it first.", None, CALL_A)


def test_opencode_pr6883_answer_after_the_think_close_is_content():
    text = "Reading it first." + READ_A + "</think>\n\nDone reading."
    assert turn(parse(text, R)) == ("Reading it first.", "Done reading.", CALL_A)


def test_vllm_48201_the_models_own_close_after_a_forced_one_is_dropped():
    """thinking_token_budget closed the block; GLM then wrote its answer, its own `</think>` and the answer again
    (vLLM #48201's raw output). Thinking had ended, so the tag is structure; the text around it is kept."""
    assert turn(parse("One plus one.</think>1+1=2.</think>1+1=2.", R)) == ("One plus one.", "1+1=2.1+1=2.", [])
    assert turn(parse("Sum.</think>It is 2.\n</think>\n\nIt is 2.", R, tools=None)) == (
        "Sum.", "It is 2.\n\n\nIt is 2.", [])


def test_think_close_inside_an_argument_value_or_after_a_content_think_is_text():
    """Inside a call the tag is the argument's text (a template written to a file); after a `<think>` of the
    content's own (text, as only a turn's start opens a block) it closes that pair."""
    call = "<tool_call>read_file<arg_key>path</arg_key><arg_value>t/</think>.j2</arg_value></tool_call>"
    assert turn(parse("Writing.</think>Now.</think>" + call + "</think>Done.", R)) == (
        "Writing.", "Now.Done.", [("read_file", {"path": "t/</think>.j2"})])
    assert parse("Done.</think>Write <think>x</think>, not </think>.", R).content == "Write <think>x</think>, not ."


# ---- thinking off, and a think block anyway --------------------------------------------------------------------

@pytest.mark.parametrize("text", ["<think></think>" + READ_A, "\n<think></think>\n" + READ_A_45,
                                  "<think>\n\n</think>\n" + READ_A])
def test_glm45_142_thinking_off_empty_block_before_a_call(text):
    assert turn(parse(text, C)) == (None, None, CALL_A)


def test_vllm_pr31788_thinking_off_full_block_before_an_answer():
    text = "<think>They want a number.</think>\n\nThe answer is 4."
    assert turn(parse(text, C)) == ("They want a number.", "The answer is 4.", [])


def test_thinking_off_block_cut_off_stays_reasoning():
    assert turn(parse("<think>Still thinking when", C)) == ("Still thinking when", "", [])


def test_thinking_off_think_tag_after_text_is_text():
    """Only a block that opens the output is reasoning; a later `<think>` is the answer's own text."""
    text = "Wrap it in <think></think> tags."
    assert turn(parse(text, C)) == (None, text, [])


# ---- examples of calls inside the reasoning -------------------------------------------------------------------

def test_gptme_pr1472_fenced_example_stays_reasoning_and_the_real_call_follows():
    reasoning = "I will write:\n```xml\n" + READ_A + "\n```\nthen run it."
    assert turn(parse(reasoning + "</think>" + READ_A, R)) == (reasoning, None, CALL_A)


def test_lmstudio_1592_inline_code_example_stays_reasoning():
    reasoning = "Some parsers want `<tool_call>get_time</tool_call>` verbatim."
    assert turn(parse(reasoning + "</think>It is noon.", R)) == (reasoning, "It is noon.", [])


def test_a_call_after_closed_code_is_still_a_call():
    assert turn(parse("Run `ls` then:" + READ_A, R)) == ("Run `ls` then:", None, CALL_A)
    assert turn(parse("```\nx\n```\n" + READ_A, R)) == ("```\nx\n```", None, CALL_A)


def test_an_unpaired_backtick_hides_calls_on_its_own_line_only():
    assert turn(parse("A stray ` here\n" + READ_A, R)) == ("A stray ` here", None, CALL_A)


def test_think_close_ends_reasoning_even_inside_an_unclosed_fence():
    assert turn(parse("```\nhalf a fence</think>Answer.", R)) == ("```\nhalf a fence", "Answer.", [])


# ---- literal tags in prose keep every character -------------------------------------------------------------

@pytest.mark.parametrize("start", [C, M])
def test_lmstudio_1592_prose_mentioning_the_tag_before_a_call_keeps_its_spaces(start):
    prose = "Calls are wrapped in <tool_call> tags. Checking now."
    assert turn(parse(prose + READ_A, start)) == (None, prose, CALL_A)
    assert turn(parse(prose + "\n" + READ_A_45, start)) == (None, prose, CALL_A)


def test_whitespace_before_an_undeclared_call_that_proves_malformed_is_kept():
    text = "See: <tool_call>nosuch<arg_key>a</arg_key>oops"
    assert parse(text, C).content == text


# ---- end-of-turn tokens ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("token", ["<|user|>", "<|observation|>", "<|endoftext|>"])
def test_end_of_turn_token_after_an_answer_is_dropped(token):
    """The core always dropped them; the field case (SGLang's whole path) is in tests/engines."""
    assert turn(parse("Sum.</think>The answer is 4." + token, R)) == ("Sum.", "The answer is 4.", [])
    assert turn(parse("Thinking" + token + "</think>x", R)) == ("Thinking", "x", [])


# ---- properties: no chunking moves a boundary ---------------------------------------------------------------

plain = st.text(alphabet="abc xyz.,:;!?\n\t-", max_size=20).map(str.strip)
code = st.sampled_from(["", "`x`", "```\ny\n```", "`` a ``", "```py\n" + READ_A + "\n```", "`" + READ_A + "`"])


@given(plain, plain, code, st.booleans(), st.data())
def test_call_inside_reasoning_then_think_close(reasoning, answer, example, newline_layout, data):
    reasoning = (reasoning + " " + example).strip() if example else reasoning
    call = ("\n" + READ_A_45 + "\n") if newline_layout else READ_A
    text = reasoning + call + "</think>" + ("\n" + answer if answer else "")
    whole = parse_output(text, TOOLS, R)
    assert streamed(text, TOOLS, R, data.draw(chunkings(text))) == whole
    assert turn(whole) == (reasoning or None, answer or None, CALL_A)


@given(plain, plain, st.booleans(), st.data())
def test_thinking_off_block_before_answer_or_call(reasoning, answer, with_call, data):
    text = "<think>" + reasoning + "</think>\n" + answer + (READ_A if with_call else "")
    whole = parse_output(text, TOOLS, C)
    assert streamed(text, TOOLS, C, data.draw(chunkings(text))) == whole
    expected_content = answer or (None if with_call else "")
    assert turn(whole) == (reasoning or None, expected_content, CALL_A if with_call else [])


literal_tag = st.sampled_from(["<tool_call>", "the <tool_call> tag", "`<tool_call>`", "<tool_call>, then a name"])


@given(plain, literal_tag, plain, st.sampled_from(["", " ", "\n", "  \n"]), st.data())
def test_literal_tags_in_prose_keep_every_character(before, tag, after, gap, data):
    prose = (before + " " + tag + " " + after).strip()
    text = prose + gap + READ_A
    whole = parse_output(text, TOOLS, C)
    assert streamed(text, TOOLS, C, data.draw(chunkings(text))) == whole
    assert turn(whole) == (None, prose, CALL_A)


@given(st.lists(st.sampled_from(["a", " ", "\n", "`", "```", READ_A, "<tool_call>", "</think>", "<think>",
                                 "<|user|>", "x"]), max_size=25).map("".join),
       st.sampled_from(list(ThinkingStart)), st.data())
def test_no_chunking_moves_a_boundary(text, start, data):
    whole = parse_output(text, TOOLS, start)
    assert streamed(text, TOOLS, start, data.draw(chunkings(text))) == whole
    # End-of-turn tokens are dropped, except inside the raw text of a region that proved not to be a call,
    # which comes back verbatim (docs/formats.md: nothing is lost wins there).
    for field in (whole.reasoning or "", (whole.content or "").split("<tool_call>")[0]):
        for token in ("<|user|>", "<|observation|>", "<|endoftext|>"):
            assert token not in field
