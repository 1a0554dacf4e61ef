"""The plugin's GLM model classes for SGLang: registered over SGLang's names, lazily, switchable, and the FP8 expert
hook on SGLang's own MoE types.

Every probe runs in a fresh interpreter, the way each SGLang process starts: `load_plugins()`, then import SGLang's
model registry and ask what each architecture name resolves to.

On this machine SGLang 0.5.23's model modules do not import as installed: `sglang.srt.models.glm4_moe` reaches
`sglang.srt.multimodal.internvl_utils` and `sglang.srt.configs.deepseek_ocr`, which import torchvision (a CUDA-built
package not installed here), and `gguf` (SGLang is installed without its dependencies). So:
  * as installed, the test checks what a user on such a machine sees: the plugin loads, logs once at INFO why the
    GLM classes are not registered, and our model module fails with that same torchvision error and nothing else;
  * with exactly those three modules replaced by empty stand-ins (nothing GLM, MoE or registry related is stubbed),
    SGLang's real GLM modules import, and the registry, our subclasses and the expert hook are tested for real.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from drivers import requires_engine

from glm_plugin.command.cpu_server import bundled_model_dir

requires_engine("sglang")

ASSET = bundled_model_dir()  # the installed package's copy (scripts/ci_wheel_check.sh runs these on the wheel)
SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
OURS = "glm_plugin.engines.sglang.model"
NAMES = ("Glm4MoeForCausalLM", "Glm4MoeForCausalLMNextN", "Glm4MoeLiteForCausalLM", "Glm4MoeLiteForCausalLMNextN")
# The modules that import torchvision / gguf at import time on the way to sglang.srt.models.glm4_moe.
STAND_INS = ("sglang.srt.multimodal.internvl_utils", "sglang.srt.configs.deepseek_ocr", "gguf")

STUB = textwrap.dedent(
    """
    import importlib.abc, importlib.machinery, sys, types
    STAND_INS = set(%r)

    class _Anything(type):
        def __getattr__(cls, name):
            if name.startswith("__"):
                raise AttributeError(name)
            return cls

    class _StandIn(types.ModuleType):
        def __getattr__(self, name):
            if name.startswith("__"):
                raise AttributeError(name)
            value = _Anything(name, (), {"__init__": lambda *a, **k: None})
            setattr(self, name, value)
            return value

    class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        def find_spec(self, name, path, target=None):
            if name in STAND_INS or name.split(".")[0] in STAND_INS:
                return importlib.machinery.ModuleSpec(name, self, is_package=True)
        def create_module(self, spec):
            module = _StandIn(spec.name)
            module.__path__ = []
            return module
        def exec_module(self, module):
            pass

    sys.meta_path.insert(0, _Finder())
    """
) % (STAND_INS,)

PROBE = textwrap.dedent(
    """
    import io, json, logging, sys
    log = io.StringIO()
    handler = logging.StreamHandler(log)
    handler.setLevel(logging.INFO)
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    import sglang.srt.plugins
    sglang.srt.plugins.load_plugins()
    lazy = "%(ours)s" not in sys.modules and "sglang.srt.models.glm4_moe" not in sys.modules
    from sglang.srt.models.registry import ModelRegistry
    sglang.srt.plugins.load_plugins()  # idempotent: a second load registers nothing twice
    out = {"lazy_before_registry": lazy, "names": {}, "bases": {}}
    for name in %(names)r:
        cls = ModelRegistry.models.get(name)
        out["names"][name] = None if cls is None else f"{cls.__module__}:{cls.__qualname__}"
        if cls is not None:
            out["bases"][name] = [f"{b.__module__}:{b.__qualname__}" for b in cls.__mro__[1:]]
    if out["names"]["Glm4MoeForCausalLM"]:
        cls, arch = ModelRegistry.resolve_model_cls(["Glm4MoeForCausalLM"])
        out["resolved"] = f"{cls.__module__}:{cls.__qualname__}"
    out["info"] = [ln for ln in log.getvalue().splitlines() if "glm_plugin" in ln]
    print("RESULT " + json.dumps(out))
    """
) % {"ours": OURS, "names": NAMES}


def run(code: str, *, disable: str | None = None, stand_ins: bool) -> dict:
    # SGLang's top-k is torch.compile'd. Inductor's FX-graph cache keys a graph without the thread count it generated
    # code for: an entry written by another test's process (OpenMP code for 2 threads) was hit here, where the same
    # graph compiles to a one-thread kernel, and the process aborted ("double free or corruption"). The compiled C++
    # is still reused: its cache is keyed by its source.
    env = dict(os.environ, HF_HUB_OFFLINE="1", SGLANG_PLUGINS="glm_plugin", TORCHINDUCTOR_FX_GRAPH_CACHE="0")
    env.pop("GLM_PLUGIN_DISABLE", None)
    env.pop("SGLANG_EXTERNAL_MODEL_PACKAGE", None)
    if disable is not None:
        env["GLM_PLUGIN_DISABLE"] = disable
    script = (STUB if stand_ins else "") + code
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=480)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, (proc.stdout[-2000:], proc.stderr[-4000:])
    result = {}
    for line in lines:  # a script made of several prints one result each
        result.update(json.loads(line[len("RESULT "):]))
    return result


def test_entry_point_is_named_glm_plugin():
    from importlib.metadata import entry_points

    assert "glm_plugin" in {ep.name for ep in entry_points(group="sglang.srt.plugins")}


def test_as_installed_plugin_loads_and_says_once_why_models_are_not_registered():
    res = run(PROBE, stand_ins=False)
    assert res["lazy_before_registry"]
    # SGLang's own GLM modules fail here too, so the registry has neither its classes nor ours.
    assert res["names"] == {name: None for name in NAMES}
    why = [ln for ln in res["info"] if "not registered" in ln]
    assert len(why) == 1 and "No module named 'torchvision'" in why[0], res["info"]


def test_as_installed_our_module_fails_only_on_torchvision():
    code = textwrap.dedent(
        f"""
        import json
        try:
            import {OURS}
            err = None
        except ModuleNotFoundError as e:
            err = e.name
        print("RESULT " + json.dumps({{"missing": err}}))
        """
    )
    assert run(code, stand_ins=False) == {"missing": "torchvision"}


def test_registry_resolves_glm_names_to_our_subclasses():
    res = run(PROBE, stand_ins=True)
    assert res["lazy_before_registry"], "plugin load must not import model code"
    for name in NAMES:
        assert res["names"][name] == f"{OURS}:{name}", res
    assert res["resolved"] == f"{OURS}:Glm4MoeForCausalLM"
    assert "sglang.srt.models.glm4_moe:Glm4MoeForCausalLM" in res["bases"]["Glm4MoeForCausalLM"]
    assert "sglang.srt.models.glm4_moe_nextn:Glm4MoeForCausalLMNextN" in res["bases"]["Glm4MoeForCausalLMNextN"]
    assert "sglang.srt.models.glm4_moe_lite:Glm4MoeLiteForCausalLM" in res["bases"]["Glm4MoeLiteForCausalLM"]
    assert sum("model architectures" in ln for ln in res["info"]) == 1, res["info"]


def test_disable_model_keeps_sglang_classes():
    res = run(PROBE, disable="model", stand_ins=True)
    assert res["names"]["Glm4MoeForCausalLM"] == "sglang.srt.models.glm4_moe:Glm4MoeForCausalLM"
    assert res["names"]["Glm4MoeForCausalLMNextN"] == "sglang.srt.models.glm4_moe_nextn:Glm4MoeForCausalLMNextN"
    assert res["resolved"] == "sglang.srt.models.glm4_moe:Glm4MoeForCausalLM"
    assert not any("model architectures" in ln for ln in res["info"])


HOOK = textwrap.dedent(
    """
    import json, types
    import torch
    from sglang.srt.layers.moe.fused_moe_triton.layer import FusedMoE
    from sglang.srt.layers.moe.token_dispatcher.standard import StandardCombineInput, StandardDispatchOutput
    from sglang.srt.layers.moe.topk import StandardTopKOutput
    from glm_plugin.engines.sglang import model
    from glm_plugin.kernels import reference
    out = {}

    # NextN refuses a checkpoint without an MTP layer before SGLang builds anything.
    config = types.SimpleNamespace(architectures=["Glm4MoeForCausalLM"], num_hidden_layers=4,
                                   num_nextn_predict_layers=0)
    try:
        model.Glm4MoeForCausalLMNextN(config)
    except ValueError as e:
        out["nextn_error"] = str(e)

    # After loading: a checkpoint whose MTP layer was stripped is refused; omitted embed/head are only logged.
    import io, logging
    log = io.StringIO()
    logging.getLogger("sglang.glm_plugin.model").addHandler(logging.StreamHandler(log))
    logging.getLogger("sglang.glm_plugin.model").setLevel(logging.INFO)
    full = dict(architectures=["Glm4MoeForCausalLM"], num_hidden_layers=4, num_nextn_predict_layers=1)
    config = types.SimpleNamespace(**full)
    try:
        model._check_nextn_loaded(config, ["model.embed_tokens.weight", "model.layers.3.enorm.weight"])
    except ValueError as e:
        out["stripped_error"] = str(e)
    model._check_nextn_loaded(config, ["model.layers.4.enorm.weight", "model.layers.4.embed_tokens.weight"])
    out["tied_log"] = log.getvalue()

    # A FusedMoE instance without SGLang's constructor (which needs a distributed runtime): only the attributes the
    # hook reads. E=8, I=128, H=256 as in the bundled checkpoint.
    def layer(fp8, ep=1):
        m = FusedMoE.__new__(FusedMoE)
        torch.nn.Module.__init__(m)
        g = torch.Generator().manual_seed(7)
        w13 = torch.randn(8, 256, 256, generator=g) * 0.05
        w2 = torch.randn(8, 256, 128, generator=g) * 0.05
        if fp8:
            m.w13_weight, m.w13_weight_scale_inv = reference.quantize_fp8_block(w13)
            m.w2_weight, m.w2_weight_scale_inv = reference.quantize_fp8_block(w2)
        else:
            m.w13_weight, m.w2_weight = w13.bfloat16(), w2.bfloat16()
        m.moe_ep_size = ep
        m.moe_runner_config = types.SimpleNamespace(no_combine=False, routed_scaling_factor=2.5)
        m.should_fuse_routed_scaling_factor_in_topk = False
        m.run_moe_core = lambda d: "sglang"
        return m

    holder = torch.nn.Module()
    holder.a, holder.b, holder.c = layer(True), layer(False), layer(True, ep=2)
    out["hooked"] = model.route_experts_through_op(holder)
    out["hooked_again"] = model.route_experts_through_op(holder)
    g = torch.Generator().manual_seed(8)
    x = torch.randn(5, 256, generator=g).bfloat16()
    weights = torch.rand(5, 2, generator=g)
    ids = torch.randint(0, 8, (5, 2), generator=g, dtype=torch.int32)
    d = StandardDispatchOutput(hidden_states=x, hidden_states_scale=None,
                               topk_output=StandardTopKOutput(weights, ids, torch.zeros(5, 8)))
    got = holder.a.run_moe_core(d)
    want = reference.fp8_moe_experts(x, holder.a.w13_weight, holder.a.w13_weight_scale_inv, holder.a.w2_weight,
                                     holder.a.w2_weight_scale_inv, weights, ids, "block")
    out["op_type"] = type(got).__name__
    out["op_err"] = ((got.hidden_states.float() - want.float()).norm() / want.float().norm()).item()
    # Where the GLM block leaves the scaling to the runner (CUDA, ROCm-aiter), the op's sum is scaled, once.
    model._RUNNER_SCALES = True
    scaled = holder.a.run_moe_core(d).hidden_states.float()
    out["scaled_err"] = ((scaled - 2.5 * got.hidden_states.float()).norm() / scaled.norm()).item()
    holder.a.should_fuse_routed_scaling_factor_in_topk = True  # the top-k weights already carry it
    out["fused_same"] = torch.equal(holder.a.run_moe_core(d).hidden_states, got.hidden_states)
    model._RUNNER_SCALES = False
    out["bf16"] = holder.b.run_moe_core(d)
    out["ep"] = holder.c.run_moe_core(d)
    print("RESULT " + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def hook_and_policy():
    """One interpreter for HOOK and POLICY (below): each SGLang import costs half a minute."""
    return run(HOOK + POLICY, stand_ins=True)


def test_nextn_check_and_expert_hook_on_sglang_types(hook_and_policy):
    res = hook_and_policy
    assert "num_nextn_predict_layers = 0" in res["nextn_error"] and "--speculative-algorithm" in res["nextn_error"]
    assert "no tensor named model.layers.4.*" in res["stripped_error"] and "random weights" in res["stripped_error"]
    assert "MTP layer 4 has no shared_head.head; the draft uses the target's lm_head.weight" in res["tied_log"]
    assert "embed_tokens" not in res["tied_log"]
    assert (res["hooked"], res["hooked_again"]) == (3, 0)
    # FP8 block experts: the op's result in SGLang's combine type. On CPU the GLM block applies
    # routed_scaling_factor itself, so none here; the dispatcher's kernel choice only reorders fp32 sums.
    assert res["op_type"] == "StandardCombineInput"
    assert res["op_err"] < 1e-2
    assert res["scaled_err"] < 1e-2 and res["fused_same"]  # bf16 rounding of the scaled output only
    # bf16 experts and expert parallelism keep SGLang's own runner.
    assert res["bf16"] == "sglang" and res["ep"] == "sglang"


BUILD = textwrap.dedent(
    """
    import io, json, logging
    import torch
    from safetensors import safe_open
    from sglang.srt.server_args import ServerArgs
    from sglang.test.parallel_groups import publish
    from transformers import AutoConfig
    import sys; sys.path.insert(0, %(asset)r + "/../../../tests/support"); import checkpoint_tensors as cn
    from glm_plugin.engines.sglang import model

    ASSET = %(asset)r
    log = io.StringIO()
    logging.getLogger("sglang.glm_plugin.model").addHandler(logging.StreamHandler(log))
    logging.getLogger("sglang.glm_plugin.model").setLevel(logging.INFO)
    config = AutoConfig.from_pretrained(ASSET)
    publish(ServerArgs(model_path=ASSET, device="cpu"), role="scheduler")  # one CPU rank, no process group
    with safe_open(ASSET + "/model.safetensors", "pt") as f:
        tensors = {name: f.get_tensor(name) for name in f.keys()}
    out = {}

    def build(names):
        draft = model.Glm4MoeForCausalLMNextN(config)
        before = {n: p.detach().clone() for n, p in draft.named_parameters()}
        draft.load_weights((n, tensors[n]) for n in names)
        return draft, before

    draft, before = build(list(tensors))
    params = dict(draft.named_parameters())
    n = cn.nextn_layer_index(config)
    out["eh_proj"] = torch.equal(params["model.eh_proj.weight"], tensors[f"model.layers.{n}.eh_proj.weight"])
    out["norm"] = torch.equal(params["model.shared_head.norm.weight"],
                              tensors[f"model.layers.{n}.shared_head.norm.weight"])
    # SGLang's loader stacked the MTP layer's experts exactly as the checkpoint facts say the op wants them.
    stacked = cn.stack_experts(tensors.__getitem__, n, config.n_routed_experts)
    out["w13"] = torch.equal(params["model.decoder.mlp.experts.w13_weight"], stacked["w13"])
    out["w2"] = torch.equal(params["model.decoder.mlp.experts.w2_weight"], stacked["w2"])
    # embed_tokens / shared_head.head are left for the EAGLE worker to bind from the target.
    out["embed_untouched"] = torch.equal(params["model.embed_tokens.weight"], before["model.embed_tokens.weight"])
    out["log_full"] = log.getvalue()

    from types import SimpleNamespace
    from sglang.test.parallel_groups import parallel_scope
    one_stage = SimpleNamespace(is_first_rank=True, is_last_rank=True, rank_in_group=0, world_size=1)
    with parallel_scope(pp_group=one_stage):
        target = model.Glm4MoeForCausalLM(config)
    target.load_weights(tensors.items())
    tparams = dict(target.named_parameters())
    out["target_hooked"] = sum(getattr(m, "_glm_plugin_hooked", False) for m in target.modules())
    out["target_layer3_w2"] = torch.equal(tparams["model.layers.3.mlp.experts.w2_weight"],
                                          cn.stack_experts(tensors.__getitem__, 3, config.n_routed_experts)["w2"])
    out["target_head"] = torch.equal(tparams["lm_head.weight"], tensors["lm_head.weight"])
    # SGLang's EAGLE-3 layer selection for the shipped head's ids (its eagle_config, SpecForge's convention)
    head = json.load(open(ASSET + "-eagle3/config.json"))["eagle_config"]["eagle_aux_hidden_state_layer_ids"]
    target.set_eagle3_layers_to_capture(head)
    out["eagle3_capture"] = list(target.model.layers_to_capture)

    tied = {f"model.layers.{n}.embed_tokens.weight", f"model.layers.{n}.shared_head.head.weight"}
    build([name for name in tensors if name not in tied])
    out["log_stripped_tied"] = log.getvalue()[len(out["log_full"]):]
    try:
        build([name for name in tensors if not name.startswith(f"model.layers.{n}.")])
    except ValueError as e:
        out["stripped_error"] = str(e)
    print("RESULT " + json.dumps(out))
    """
) % {"asset": str(ASSET)}


def test_target_and_nextn_draft_build_and_load_the_bundled_checkpoint_on_cpu():
    res = run(BUILD, stand_ins=True)
    assert res["eh_proj"] and res["norm"], res
    assert res["w13"] and res["w2"], "SGLang's expert loader and checkpoint_tensors.stack_experts disagree"
    assert res["embed_untouched"]
    assert "Glm4MoeForCausalLMNextN built by glm_plugin" in res["log_full"]
    assert "has no" not in res["log_full"]
    assert "MTP layer 4 has no embed_tokens; the draft uses the target's model.embed_tokens.weight" in \
        res["log_stripped_tied"]
    assert "MTP layer 4 has no shared_head.head; the draft uses the target's lm_head.weight" in \
        res["log_stripped_tied"]
    assert "no tensor named model.layers.4.*" in res["stripped_error"]
    # The target: every MoE layer (1..3; layer 0 is dense) hooked, and loaded from the same checkpoint.
    assert res["target_hooked"] == 3 and res["target_layer3_w2"] and res["target_head"], res
    # The shipped EAGLE-3 head is read after layers 1, 2, 3 here too (vLLM: tests/e2e/test_vllm_speculative.py).
    assert res["eagle3_capture"] == [1, 2, 3]


FP8 = textwrap.dedent(
    """
    import json
    import torch
    import torch.nn.functional as F
    from safetensors import safe_open
    from sglang.srt.layers.quantization.fp8 import Fp8Config
    from sglang.srt.server_args import ServerArgs
    from sglang.test.parallel_groups import publish
    from transformers import AutoConfig
    from glm_plugin import checkpoint as cn
    from glm_plugin.engines.sglang import model
    from glm_plugin.kernels import reference

    ASSET = %(asset)r
    config = AutoConfig.from_pretrained(ASSET)
    publish(ServerArgs(model_path=ASSET, device="cpu"), role="scheduler")
    with safe_open(ASSET + "/model.safetensors", "pt") as f:
        tensors = {name: f.get_tensor(name) for name in f.keys()}
    n = cn.nextn_layer_index(config)

    def fp8_checkpoint():
        # The MTP layer's routed experts as a zai-org block-FP8 checkpoint stores them.
        for name, t in tensors.items():
            if ".mlp.experts." in name:
                w, s = reference.quantize_fp8_block(t)
                yield name, w
                yield name[: -len("weight")] + "weight_scale_inv", s
            else:
                yield name, t

    # Attention and the shared expert stay bf16 (SGLang's FP8 linear needs Triton, which has no CPU driver).
    keep = [f"model.decoder.self_attn.{p}" for p in ("q_proj", "k_proj", "v_proj", "qkv_proj", "o_proj")] + \
        [f"model.decoder.mlp.shared_experts.{p}" for p in ("gate_proj", "up_proj", "gate_up_proj", "down_proj")]
    torch.set_default_dtype(torch.bfloat16)  # SGLang's loader builds in the checkpoint's dtype
    draft = model.Glm4MoeForCausalLMNextN(config, quant_config=Fp8Config(
        is_checkpoint_fp8_serialized=True, weight_block_size=[128, 128], ignored_layers=keep))
    torch.set_default_dtype(torch.float32)
    draft.load_weights(fp8_checkpoint())
    for _, module in draft.named_modules():  # what SGLang's loader does after load_weights
        method = getattr(module, "quant_method", None)
        if method is not None and hasattr(method, "process_weights_after_loading"):
            method.process_weights_after_loading(module)
    block = draft.model.decoder.mlp
    found = cn.op_expert_weights(block.experts)
    out = {"layout": found if isinstance(found, str) else found[0]}

    g = torch.Generator().manual_seed(18)
    x = (torch.randn(16, config.hidden_size, generator=g) * 0.5).bfloat16()
    with torch.no_grad():
        got = block(x)  # SGLang's whole MoE block: router, TopK, dispatch, our op, combine, shared expert
    weights, ids = reference.glm_route(x.float() @ tensors[f"model.layers.{n}.mlp.gate.weight"].float().t(),
                                       tensors[f"model.layers.{n}.mlp.gate.e_score_correction_bias"],
                                       config.num_experts_per_tok, 1, 1, True, config.routed_scaling_factor)

    def swiglu(prefix, v):
        gate = v @ tensors[prefix + "gate_proj.weight"].float().t()
        up = v @ tensors[prefix + "up_proj.weight"].float().t()
        return (F.silu(gate) * up) @ tensors[prefix + "down_proj.weight"].float().t()

    want = torch.zeros(x.shape)
    for t in range(x.shape[0]):
        for w, e in zip(weights[t].tolist(), ids[t].tolist()):
            want[t] += w * swiglu(f"model.layers.{n}.mlp.experts.{e}.", x[t].float())
        want[t] += swiglu(f"model.layers.{n}.mlp.shared_experts.", x[t].float())
    out["rel"] = ((got.float() - want).norm() / want.norm()).item()

    print("RESULT " + json.dumps(out))
    """
) % {"asset": str(ASSET)}


def test_fp8_mtp_block_loaded_by_sglang_runs_through_our_op():
    """A block-FP8 copy of the bundled MTP layer's experts, loaded by SGLang's own FP8 MoE method, through SGLang's
    whole GLM MoE block on CPU (router, routed_scaling_factor, shared expert), with the experts on our op: matches
    the bf16 layer. Tolerance: e4m3 weights (3 mantissa bits) leave a few percent of the output's norm (measured
    2.7% here); a wrong stacking or a missing / doubled routed_scaling_factor gives 50-100%."""
    res = run(FP8, stand_ins=True)
    if res["layout"] != "block":
        pytest.skip(f"SGLang re-encoded the FP8 experts on this CPU, so its own runner keeps them: {res['layout']}")
    assert res["rel"] < 0.08, res


LITE = textwrap.dedent(
    """
    import importlib.util, json
    from types import SimpleNamespace
    from sglang.srt.server_args import ServerArgs
    from sglang.test.parallel_groups import parallel_scope, publish
    from transformers import Glm4MoeLiteConfig
    from glm_plugin.engines.sglang import model

    spec = importlib.util.spec_from_file_location("make_tiny_glm_lite", %(script)r)
    maker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(maker)
    config = Glm4MoeLiteConfig(**maker.TINY_LITE, architectures=["Glm4MoeLiteForCausalLM"])
    publish(ServerArgs(model_path=%(asset)r, device="cpu"), role="scheduler")
    one_stage = SimpleNamespace(is_first_rank=True, is_last_rank=True, rank_in_group=0, world_size=1)
    with parallel_scope(pp_group=one_stage):
        lite = model.Glm4MoeLiteForCausalLM(config)
    out = {"hooked": sum(getattr(m, "_glm_plugin_hooked", False) for m in lite.modules()),
           "moe_layers": config.num_hidden_layers - config.first_k_dense_replace}
    try:
        model.Glm4MoeLiteForCausalLMNextN(config)  # the tiny Flash checkpoint has no MTP layer
    except ValueError as e:
        out["nextn_error"] = str(e)
    print("RESULT " + json.dumps(out))
    """
) % {"asset": str(ASSET), "script": str(SCRIPTS / "make_tiny_glm_lite.py")}


def test_lite_target_builds_with_every_moe_layer_hooked_and_its_nextn_refuses_no_mtp_layer():
    res = run(LITE, stand_ins=True)
    assert res["hooked"] == res["moe_layers"] == 3, res
    assert "num_nextn_predict_layers = 0" in res["nextn_error"]


POLICY = textwrap.dedent(
    """
    import io, json, logging, os, types
    import torch
    from sglang.srt.layers.moe.fused_moe_triton.layer import FusedMoE
    from sglang.srt.layers.moe.token_dispatcher.standard import StandardDispatchOutput
    from sglang.srt.layers.moe.topk import StandardTopKOutput
    from glm_plugin.engines.sglang import model
    from glm_plugin.kernels import policy, reference

    log = io.StringIO()
    logging.getLogger("sglang.glm_plugin.model").addHandler(logging.StreamHandler(log))
    logging.getLogger("sglang.glm_plugin.model").setLevel(logging.INFO)

    class OnCuda(torch.Tensor):
        # Activations as SGLang's dispatcher hands them over on a GPU (the device simulated; nothing runs on it).
        @property
        def device(self):
            return torch.device("cuda", 0)

    def fp8_layer(inter=128):
        m = FusedMoE.__new__(FusedMoE)
        torch.nn.Module.__init__(m)
        g = torch.Generator().manual_seed(7)
        m.w13_weight, m.w13_weight_scale_inv = reference.quantize_fp8_block(
            torch.randn(8, 2 * inter, 256, generator=g) / 20)
        m.w2_weight, m.w2_weight_scale_inv = reference.quantize_fp8_block(torch.randn(8, 256, inter, generator=g) / 20)
        m.moe_ep_size = 1
        m.moe_runner_config = types.SimpleNamespace(no_combine=False, routed_scaling_factor=2.5)
        m.should_fuse_routed_scaling_factor_in_topk = False
        m.run_moe_core = lambda d: "sglang"
        return m

    def dispatch(x):
        g = torch.Generator().manual_seed(8)
        ids = torch.randint(0, 8, (x.shape[0], 2), generator=g, dtype=torch.int32)
        return StandardDispatchOutput(hidden_states=x, hidden_states_scale=None, topk_output=StandardTopKOutput(
            torch.rand(x.shape[0], 2, generator=g), ids, torch.zeros(x.shape[0], 8)))

    def owner(x, inter=128, **env):
        for name in ("GLM_PLUGIN_GPU_KERNELS", "TRITON_INTERPRET", "GLM_PLUGIN_DISABLE"):
            os.environ.pop(name, None)
        os.environ.update(env)
        policy._resolved.clear()
        holder = torch.nn.Module()
        holder.experts = fp8_layer(inter)
        model._built(holder)
        if not getattr(holder.experts, "_glm_plugin_hooked", False):
            return "sglang (not hooked)"
        found = model._op_path(holder.experts, dispatch(x))
        if isinstance(found, str):
            return holder.experts.run_moe_core(dispatch(x))
        return "ours:" + found[0]  # the layout our op would run; not run here (the device is simulated)

    x = torch.randn(3, 256).bfloat16()
    cuda = x.as_subclass(OnCuda)
    out = {
        "cpu": owner(x),
        "cpu_disabled": owner(x, GLM_PLUGIN_DISABLE="kernels"),
        "cuda": owner(cuda),
        "cuda_opted_in_no_kernel": owner(cuda, GLM_PLUGIN_GPU_KERNELS="1"),
        "cuda_opted_in": owner(cuda, GLM_PLUGIN_GPU_KERNELS="1", TRITON_INTERPRET="1"),
        "log": log.getvalue(),
    }
    # A prebuilt CUDA kernel of ours loads (simulated): it takes I = 128, and refuses I = 192 (what tensor
    # parallelism leaves of an intermediate size), which then stays on SGLang's runner, said once.
    from glm_plugin.kernels import dispatch as kernel_table
    kernel_table._LOADS["cuda"] = lambda op: None
    out["cuda_kernel_takes"] = owner(cuda, GLM_PLUGIN_GPU_KERNELS="1")
    out["cuda_kernel_refuses"] = owner(cuda, inter=192, GLM_PLUGIN_GPU_KERNELS="1")
    out["cuda_kernel_refuses_again"] = owner(cuda, inter=192, GLM_PLUGIN_GPU_KERNELS="1")
    out["log_refused"] = log.getvalue()[len(out["log"]):]
    print("RESULT " + json.dumps(out))
    """
)


def test_device_policy_and_disable_kernels_on_sglangs_moe_layer(hook_and_policy):
    """SGLang's own FusedMoE with FP8 block experts: on CPU our op; with GLM_PLUGIN_DISABLE=kernels not hooked; on
    a (simulated) CUDA device SGLang's runner unless opted in, and opted in only where a compiled kernel of ours runs
    (Triton's interpreter stands in for the GPU)."""
    res = hook_and_policy
    assert res["cpu"] == "ours:block"
    assert res["cpu_disabled"] == "sglang (not hooked)"
    assert res["cuda"] == "sglang"
    assert res["cuda_opted_in_no_kernel"] == "sglang"
    assert res["cuda_opted_in"] == "ours:block"
    log = res["log"]
    assert log.count("GLM routed experts use SGLang's MoE runner: on cuda the engine's tuned FP8 kernels are the "
                     "default (GLM_PLUGIN_GPU_KERNELS=1 tries glm_plugin's)") == 1, log
    assert "GLM routed experts use SGLang's MoE runner: opted in by GLM_PLUGIN_GPU_KERNELS, but no compiled kernel " \
           "of ours runs here" in log, log


def test_a_shape_our_cuda_kernel_refuses_stays_on_sglangs_runner(hook_and_policy):
    """Opted in with our CUDA kernel loadable (simulated): I = 128 is ours; I = 192 (not a multiple of 128) stays
    SGLang's, said once however often the layer is called (checkpoint.op_expert_weights refuses it before the policy
    asks; the policy's own shape check, `shape=`, is the vLLM adapter's, tested in test_fp8_policy.py)."""
    res = hook_and_policy
    assert res["cuda_kernel_takes"] == "ours:block"
    assert res["cuda_kernel_refuses"] == res["cuda_kernel_refuses_again"] == "sglang"
    said = [line for line in res["log_refused"].splitlines() if "192" in line]
    assert said == ["glm_plugin: GLM routed experts use SGLang's MoE runner: intermediate size per rank 192 is not a "
                    "multiple of 128"], res["log_refused"]
