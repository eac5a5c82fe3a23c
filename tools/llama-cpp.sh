#!/usr/bin/env bash
# Builds llama-cpp-python (llama.cpp's own runtime) from its PyPI source once per machine and
# prints the Python of a virtualenv that imports it. The built wheel is cached, so CI pays the
# ~4-minute C++ build at most once per machine.
#
# Why these CMake flags (tools/llama-cpu-flags.sh): on an AMX-capable CPU, GCC 12's native build
# crashes in ggml's AMX kernels, so the x86 extensions are named one by one — only those this CPU
# has (an AVX-512 build dies with SIGILL on an AVX2-only one). One wheel per flag set.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=0.3.36
CACHE=${QAT_DISTILL_CACHE:-$HOME/.cache/qat-distill}
{ read -r TAG; read -r CPU_FLAGS; } < <(tools/llama-cpu-flags.sh)
VENV=$CACHE/llama-venv-$VERSION$TAG
WHEELS=$CACHE/wheels$TAG
PY=$VENV/bin/python

ready() { [ -x "$PY" ] && "$PY" -c "import llama_cpp, numpy" 2>/dev/null; }
if ready; then
    echo "$PY"
    exit 0
fi

# Tests run in parallel and several ask for llama.cpp on a cold cache: one builds, the others
# wait for it (each used to remove the other's half-made virtualenv and build again).
mkdir -p "$CACHE"
exec 9>"$CACHE/llama-venv-$VERSION$TAG.lock"
flock 9
if ready; then
    echo "$PY"
    exit 0
fi

mkdir -p "$WHEELS"
rm -rf "$VENV"
python3 -m venv "$VENV" >&2
"$PY" -m pip install --quiet --disable-pip-version-check numpy >&2
wheel=$(ls "$WHEELS"/llama_cpp_python-"$VERSION"-*.whl 2>/dev/null | head -n 1 || true)
if [ -z "$wheel" ]; then
    echo "building llama-cpp-python $VERSION from source (a few minutes, once per machine)..." >&2
    CMAKE_ARGS="$CPU_FLAGS -DLLAMA_CURL=OFF" \
    CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
        "$PY" -m pip wheel --quiet --disable-pip-version-check --no-deps --no-binary llama-cpp-python \
        -w "$WHEELS" "llama-cpp-python==$VERSION" >&2
    wheel=$(ls "$WHEELS"/llama_cpp_python-"$VERSION"-*.whl | head -n 1)
fi
"$PY" -m pip install --quiet --disable-pip-version-check "$wheel" >&2
"$PY" -c "import llama_cpp" >&2
echo "$PY"
