"""`glm-plugin demo` (what `make demo` runs): serve the bundled checkpoint, play a scripted agent chat, stop, exit 0.

Why a scripted conversation: a new user should see, without reading any docs, what the plugin makes a GLM server
do: thinking separated from the answer, a tool call with typed arguments, a local tool's result and an answer built
from it. The server runs in the background with its log in a file; one progress line shows while it loads.
"""

from __future__ import annotations

import socket
import sys
import tempfile
from pathlib import Path

from glm_plugin.command import chat
from glm_plugin.command.cpu_server import DEMO_MODEL_NAME, demo_server_command, disabled_note
from glm_plugin.command.server_process import ServerFailed, ServerProcess

# What a user would type: a string argument, then an integer one. The bundled tiny model was trained on these
# tools (docs/tiny-model.md); the weather table and the timer id are fixed, so every run prints the same.
DEMO_SCRIPT = """\
# glm-plugin demo: each line is typed into `glm-plugin chat`; lines starting with / are chat commands.
What is the weather in Paris?
Set a timer for 25 minutes called Tea Break.
"""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def run(script: str | None = None, port: int | None = None, log_dir: str | None = None,
        timeout: float = 300.0) -> int:
    """Start the demo server, replay `script` (a file; default: DEMO_SCRIPT) through the chat, stop the server."""
    port = port or free_port()
    log_dir = Path(log_dir or tempfile.mkdtemp(prefix="glm-plugin-demo-"))
    cmd, env = demo_server_command(port=port)
    base = f"http://127.0.0.1:{port}"
    print("glm-plugin demo: starting vLLM on this CPU with the bundled tiny GLM checkpoint", flush=True)
    note = disabled_note(env)
    if note:
        print(f"glm-plugin demo: {note}", flush=True)
    server = ServerProcess(cmd, base, log_dir / "server.log", env)
    with server:
        try:
            server.wait_ready(timeout=timeout)
        except ServerFailed as err:
            print(f"glm-plugin demo: {err}", file=sys.stderr)
            return 1
        if script is None:
            script_path = log_dir / "demo-script.txt"
            script_path.write_text(DEMO_SCRIPT)
            script = str(script_path)
        status = chat.main(base, DEMO_MODEL_NAME, script, max_tokens=256)
        print("glm-plugin demo: stopping the server", flush=True)
    if status == 0:
        print("glm-plugin demo: done. Keep a server up with `make serve` (`glm-plugin serve`),\n"
              "  then `glm-plugin chat`, `glm-plugin check` or examples/*.py")
    return status


if __name__ == "__main__":
    sys.exit(run())
