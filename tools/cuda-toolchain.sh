#!/usr/bin/env bash
# A CUDA 13.0 build toolchain from PyPI wheels, once per machine: nvcc, headers, link-time
# libraries, and a link-only libcuda stub (every cu* symbol returns CUDA_ERROR_STUB_LIBRARY; the
# real libcuda.so.1 comes from a GPU machine's driver). No GPU is needed. Prints the CUDA_HOME
# it made (under ${CUDA_BUILD_ROOT:-~/.cache/cuda-build}; the wheels take ~1.2 GB). nvcc stays
# at 13.0.x: the GPU machine's driver (580, CUDA 13.0) rejects newer PTX.
# Exit 3: pip could not fetch the wheels (PyPI unreachable).
set -euo pipefail
ROOT=${CUDA_BUILD_ROOT:-$HOME/.cache/cuda-build}
CH="$ROOT/cuda"
mkdir -p "$ROOT"
if [[ ! -x "$CH/bin/nvcc" || ! -f "$CH/lib64/stubs/libcuda.so" ]]; then
    if [[ ! -x "$ROOT/venv/bin/python" ]]; then python3 -m venv "$ROOT/venv" >&2; fi
    if ! "$ROOT/venv/bin/pip" install -q --disable-pip-version-check \
        nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 \
        nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 \
        nvidia-cublas==13.0.0.19 nvidia-curand==10.4.0.35 nvidia-cuda-nvrtc==13.0.48 >&2; then
        echo "cuda-toolchain: pip could not install the CUDA wheels" >&2
        exit 3
    fi
    W="$("$ROOT/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/nvidia/cu13"
    mkdir -p "$CH/lib64/stubs"
    for d in bin include nvvm; do ln -sfn "$W/$d" "$CH/$d"; done
    for l in libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libnvrtc.so.13; do
        ln -sfn "$W/lib/$l" "$CH/lib64/$l"
        ln -sfn "$W/lib/$l" "$CH/lib64/${l%%.so.*}.so"
    done
    grep -ohE '\bcu[A-Z][A-Za-z0-9_]*' "$W/include/cuda.h" | sort -u \
        | sed 's/.*/int &(void){return 34;}/' > "$CH/lib64/stubs/libcuda-stub.c"
    gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$CH/lib64/stubs/libcuda.so" \
        "$CH/lib64/stubs/libcuda-stub.c"
fi
echo "$CH"
