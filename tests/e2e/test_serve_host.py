"""`glm-plugin serve --demo --host 0.0.0.0` answers on this machine's non-loopback address, which is what a laptop
uses to reach a GPU box, and the URL it prints for other machines is one that works. The server is the real
command (`python -m glm_plugin.command.cli serve`, exec'ing vLLM), the one the end-to-end modules share (conftest.py).
"""

from __future__ import annotations

import json
import urllib.request
from typing import NamedTuple
from urllib.parse import urlsplit

import pytest

pytest.importorskip("vllm")

from glm_plugin.command.chat_client import ChatEndpoint, reply_from_completion  # noqa: E402
from glm_plugin.command.cpu_server import DEMO_MODEL_NAME  # noqa: E402
from glm_plugin.command.serve_command import lan_addresses  # noqa: E402

pytestmark = pytest.mark.e2e


class LanServer(NamedTuple):
    base: str  # http://<non-loopback address>:<port>
    log: object  # pathlib.Path of what `glm-plugin serve` and the engine printed


@pytest.fixture(scope="module")
def lan_server(demo_server):
    """The shared demo server (conftest.py: `glm-plugin serve --demo --host 0.0.0.0`), seen from the LAN side."""
    addresses = lan_addresses()
    if not addresses:
        pytest.skip("this machine has no non-loopback IPv4 address to connect from")
    port = urlsplit(demo_server.base).port
    return LanServer(f"http://{addresses[0]}:{port}", demo_server.log)


def served_models(base: str) -> list[str]:
    with urllib.request.urlopen(base + "/v1/models", timeout=10) as reply:
        return [m["id"] for m in json.load(reply)["data"]]


def answers_a_chat(base: str) -> str:
    endpoint = ChatEndpoint(base, timeout=120)
    try:
        body = endpoint.complete([{"role": "user", "content": "Hello!"}], max_tokens=24, temperature=0)
    finally:
        endpoint.close()
    return reply_from_completion(body).content or ""


def test_the_demo_server_answers_on_the_non_loopback_address(lan_server):
    assert served_models(lan_server.base) == [DEMO_MODEL_NAME]
    assert answers_a_chat(lan_server.base)


def test_the_printed_url_for_other_machines_is_the_one_that_answers(lan_server):
    printed = lan_server.log.read_text(errors="replace")
    assert f"from another machine: {lan_server.base}" in printed
    assert "--host 0.0.0.0" in printed.splitlines()[0]
