"""A vLLM server on the bundled checkpoint, started the way a user starts one, for the end-to-end tests.

Why a helper: several test modules talk to the same kind of server (the examples, the SDK round trip, Claude Code,
the long prompt); one start of ~15-70 s each is the largest cost of the suite, so they share one (conftest.py).
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, NamedTuple

from glm_plugin.command.demo import free_port
from glm_plugin.command.server_process import ServerProcess

MTP = {"method": "mtp", "num_speculative_tokens": 1}


class Served(NamedTuple):
    base: str  # http://127.0.0.1:PORT
    tp: int  # tensor-parallel size
    log: Path  # the server's log


@contextmanager
def serve_demo(log_dir: Path, *options: str, engine_args: tuple[str, ...] = (), tp: int = 1,
               host: str = "127.0.0.1") -> Iterator[Served]:
    """`glm-plugin serve --demo --host HOST OPTIONS -- ENGINE_ARGS` (the real command, which execs vLLM) until the
    block ends; reached through loopback either way."""
    port = free_port(host)
    cmd = [sys.executable, "-m", "glm_plugin.command.cli", "serve", "--demo", "--host", host, "--port", str(port),
           *options, "--", *engine_args]
    env = {k: v for k, v in os.environ.items() if k != "GLM_PLUGIN_DISABLE"}
    base = f"http://127.0.0.1:{port}"
    log = Path(log_dir) / "vllm.log"
    with ServerProcess(cmd, base, log, env) as process:
        process.wait_ready(timeout=600, progress=None)
        yield Served(base, tp, log)


def mtp_args(tp: int = 1) -> tuple[str, ...]:
    """Engine arguments for MTP x1 (speculative deltas reach the parsers) at tensor-parallel size `tp`."""
    return ("--speculative-config", json.dumps(MTP)) + (("--tensor-parallel-size", str(tp)) if tp > 1 else ())
