"""The one served engine that most end-to-end modules share (test_examples, test_served_round_trip at TP=1,
test_claude_code_served, test_long_prompt, test_serve_host): the bundled checkpoint as `glm-plugin serve --demo`
serves it, with a 64k context (Claude Code's prompts, the long-prompt test) and MTP x1 (several tokens per delta
through the parsers).
It listens on all interfaces, as a GPU box serving laptops does (test_serve_host reaches it from the machine's
non-loopback address). A module that needs another setting (TP=2, an FP8 checkpoint) starts its own."""

from __future__ import annotations

import importlib.util

import pytest
from served import Served, mtp_args, serve_demo

LONG_CONTEXT = 65536


@pytest.fixture(scope="session")
def demo_server(tmp_path_factory) -> Served:
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vllm is not installed")
    with serve_demo(tmp_path_factory.mktemp("demo-server"), "--max-model-len", str(LONG_CONTEXT),
                    engine_args=mtp_args(), host="0.0.0.0") as served:
        yield served
