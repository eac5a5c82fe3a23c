#!/usr/bin/env bash
# Builds llama-cpp-python (llama.cpp's own runtime) from its PyPI source once per machine and
# prints the Python of a virtualenv that imports it. The built wheel is cached, so CI pays the
# ~4-minute C++ build at most once per machine.
#
# Why these CMake flags: on this AMX-capable CPU, GCC 12's native build crashes in ggml's AMX
# kernels. We build for AVX2 + AVX-512 explicitly (no -march=native, so no AMX), which keeps
# llama.cpp's usual fast CPU path and its weight repacking.
set -euo pipefail

VERSION=0.3.36
CACHE=${QAT_DISTILL_CACHE:-$HOME/.cache/qat-distill}
VENV=$CACHE/llama-venv-$VERSION
WHEELS=$CACHE/wheels
PY=$VENV/bin/python

if [ -x "$PY" ] && "$PY" -c "import llama_cpp, numpy" 2>/dev/null; then
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
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DLLAMA_CURL=OFF" \
    CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
        "$PY" -m pip wheel --quiet --disable-pip-version-check --no-deps --no-binary llama-cpp-python \
        -w "$WHEELS" "llama-cpp-python==$VERSION" >&2
    wheel=$(ls "$WHEELS"/llama_cpp_python-"$VERSION"-*.whl | head -n 1)
fi
"$PY" -m pip install --quiet --disable-pip-version-check "$wheel" >&2
"$PY" -c "import llama_cpp" >&2
echo "$PY"
