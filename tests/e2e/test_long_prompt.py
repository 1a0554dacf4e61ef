"""A prompt of over 40,000 tokens to the shared demo server (64k context), then an ordinary request: both are
answered, and the engine is still alive.

Why: vLLM's default lets a whole prompt be one engine step; on a 2-core AVX2 CPU a 47,000-token step outlived the
engine's execute-model timeout (300 s), the engine died and every later request got HTTP 500. The servers we start
on a CPU bound a step to `CPU_STEP_TOKENS` (glm_plugin/command/cpu_server.py), so a long prompt is prefilled in chunks.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request

import pytest

from glm_plugin.command.cpu_server import CPU_STEP_TOKENS, DEMO_MODEL_NAME

pytestmark = pytest.mark.e2e

LONG_PROMPT_TOKENS = 40_000
LONG_PROMPT_WORDS = 13_300  # about 3 tokens a word in the tiny model's tokenizer: just over LONG_PROMPT_TOKENS
WORDS = "the quick brown fox jumps over the lazy dog while seven red kites circle above a quiet harbour".split()


def _post(base: str, path: str, body: dict, timeout: float) -> tuple[int, dict]:
    request = urllib.request.Request(base + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return reply.status, json.load(reply)
    except urllib.error.HTTPError as err:
        return err.code, {"error": err.read().decode(errors="replace")[-2000:]}


def _chat(base: str, text: str, timeout: float, max_tokens: int = 16) -> tuple[int, dict]:
    return _post(base, "/v1/chat/completions", {"model": DEMO_MODEL_NAME, "max_tokens": max_tokens, "temperature": 0,
                                                "messages": [{"role": "user", "content": text}]}, timeout)


def test_a_40k_token_prompt_is_answered_and_the_server_lives_on(demo_server):
    base = demo_server.base
    long_text = " ".join(WORDS[i % len(WORDS)] for i in range(LONG_PROMPT_WORDS))
    started = time.monotonic()
    status, reply = _chat(base, long_text, timeout=1800)
    elapsed = time.monotonic() - started
    assert status == 200, reply
    prompt_tokens = reply["usage"]["prompt_tokens"]
    assert prompt_tokens >= LONG_PROMPT_TOKENS, prompt_tokens
    print(f"long prompt: {prompt_tokens} tokens answered in {elapsed:.0f} s ({prompt_tokens / elapsed:.0f} tokens/s, "
          f"steps of {CPU_STEP_TOKENS} tokens)")

    status, reply = _chat(base, "Hello!", timeout=120, max_tokens=96)
    assert status == 200 and reply["choices"][0]["message"]["content"] == "Hello! How can I help you today?", reply
    with urllib.request.urlopen(base + "/health", timeout=10) as health:
        assert health.status == 200
    log = demo_server.log.read_text(errors="replace")
    assert f"'max_num_batched_tokens': {CPU_STEP_TOKENS}" in log  # the engine's "non-default args" line
    assert not re.search(r"EngineDeadError|timed out|\" 5\d\d ", log), log[-3000:]
