"""Claude Code (npm `@anthropic-ai/claude-code`) completes a non-interactive prompt against the bundled checkpoint
served with a 64k context, set up only by `glm-plugin claude-code --write` in a fresh HOME: directly against
`/v1/messages`, and through claude-code-router (`ccr code`). No POST may get an HTTP 4xx (the max_tokens trap).

The answers are the tiny model's; the protocol is what is tested. Skipped with a message when npm (or the npm
registry) is unavailable. Set GLM_PLUGIN_NPM_PREFIX to a directory that already has both packages installed
(`npm install --prefix DIR @anthropic-ai/claude-code @musistudio/claude-code-router`) to skip the download.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

pytest.importorskip("vllm")

from glm_plugin.command import claude_code  # noqa: E402

pytestmark = pytest.mark.e2e

PACKAGES = ["@anthropic-ai/claude-code", "@musistudio/claude-code-router"]
ROUTER_PORT = 3456  # claude-code-router's default


@pytest.fixture(scope="module")
def npm_bin(tmp_path_factory) -> Path:
    prefix = os.environ.get("GLM_PLUGIN_NPM_PREFIX")
    if prefix:
        bin_dir = Path(prefix) / "node_modules" / ".bin"
    else:
        if not shutil.which("npm"):
            pytest.skip("npm is not installed: Claude Code cannot be installed for this test")
        prefix = tmp_path_factory.mktemp("npm")
        try:
            out = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", str(prefix), *PACKAGES],
                                 capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired:
            pytest.skip("npm install of Claude Code took over 600 s (no registry access?)")
        if out.returncode != 0:
            pytest.skip(f"npm install of Claude Code failed (no registry access?): {out.stderr[-500:]}")
        bin_dir = Path(prefix) / "node_modules" / ".bin"
    if not (bin_dir / "claude").exists() or not (bin_dir / "ccr").exists():
        pytest.skip(f"claude / ccr not found in {bin_dir}")
    return bin_dir


def written_env(home: Path) -> dict[str, str]:
    text = (home / ".config" / "glm-plugin" / "claude-code.env").read_text()
    return dict(re.findall(r"^export (\w+)=(.*)$", text, re.M))


def posts(log: Path) -> list[tuple[str, int]]:
    return [(path, int(code)) for path, code in
            re.findall(r'"POST (\S+) HTTP/1\.1" (\d{3})', log.read_text(errors="replace"))]


def test_claude_code_direct_and_through_the_router(npm_bin, demo_server, tmp_path):
    base, log = demo_server.base, demo_server.log
    first = len(posts(log))  # the server is shared: only this test's requests count
    home = tmp_path / "home"
    home.mkdir()
    # A small output cap keeps the tiny model's answers short on a CPU; the default is derived from the context.
    assert claude_code.main(base, write=True, home=str(home), max_output=512) == 0
    env = {"PATH": f"{npm_bin}{os.pathsep}{os.environ.get('PATH', '')}", "HOME": str(home),
           "LANG": "C.UTF-8", "TERM": "dumb"}

    direct = subprocess.run([str(npm_bin / "claude"), "-p", "Say hello."], env={**env, **written_env(home)},
                            cwd=tmp_path, capture_output=True, text=True, timeout=400)
    assert direct.returncode == 0, direct.stdout[-1000:] + direct.stderr[-1000:]
    assert {("/v1/messages?beta=true", 200), ("/v1/messages", 200)} & set(posts(log)[first:])

    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", ROUTER_PORT)) == 0:
            pytest.skip(f"port {ROUTER_PORT} is taken: claude-code-router cannot start")
    router = subprocess.Popen([str(npm_bin / "ccr"), "start"], env=env, cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", ROUTER_PORT)) == 0:
                    break
            assert time.monotonic() < deadline, "claude-code-router did not listen within 60 s"
            time.sleep(1)
        before = len(posts(log))
        routed = subprocess.run([str(npm_bin / "ccr"), "code", "-p", "Say hello."], env=env, cwd=tmp_path,
                                capture_output=True, text=True, timeout=400)
        assert routed.returncode == 0, routed.stdout[-1000:] + routed.stderr[-1000:]
        assert ("/v1/chat/completions", 200) in posts(log)[before:]
    finally:
        subprocess.run([str(npm_bin / "ccr"), "stop"], env=env, capture_output=True, timeout=60)
        if router.poll() is None:
            router.terminate()
            router.wait(30)

    failed = [(path, code) for path, code in posts(log)[first:] if code >= 400]
    assert not failed, f"HTTP errors in the server log: {failed}"
