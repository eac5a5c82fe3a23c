#!/usr/bin/env bash
# Installs a CUDA 13.0 build toolchain from PyPI wheels (nvcc, headers, link-time libraries and
# a link-only libcuda stub; no GPU needed) and builds the GPU check with --features cuda.
# The binary lands in tools/gpu/qd-gpu-check (ignored by git), ready to carry to the GPU machine.
# nvcc stays at 13.0.x: the GPU machine's driver (580, CUDA 13.0) rejects newer PTX.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${CUDA_BUILD_ROOT:-$HOME/.cache/cuda-build}
CAP=${CUDA_COMPUTE_CAP:-90}
mkdir -p "$ROOT"

if [[ ! -x "$ROOT/venv/bin/python" ]]; then python3 -m venv "$ROOT/venv"; fi
"$ROOT/venv/bin/pip" install -q --disable-pip-version-check \
  nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 \
  nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 \
  nvidia-cublas==13.0.0.19 nvidia-curand==10.4.0.35 nvidia-cuda-nvrtc==13.0.48
W="$("$ROOT/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/nvidia/cu13"

CH="$ROOT/cuda"
mkdir -p "$CH/lib64/stubs"
for d in bin include nvvm; do ln -sfn "$W/$d" "$CH/$d"; done
for l in libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libnvrtc.so.13; do
  ln -sfn "$W/lib/$l" "$CH/lib64/$l"
  ln -sfn "$W/lib/$l" "$CH/lib64/${l%%.so.*}.so"
done
grep -ohE '\bcu[A-Z][A-Za-z0-9_]*' "$W/include/cuda.h" | sort -u \
  | sed 's/.*/int &(void){return 34;}/' > "$CH/lib64/stubs/libcuda-stub.c"
gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$CH/lib64/stubs/libcuda.so" "$CH/lib64/stubs/libcuda-stub.c"

export CUDA_HOME="$CH" PATH="$CH/bin:$PATH" CUDA_COMPUTE_CAP="$CAP"
export CARGO_TARGET_DIR="${CUDA_TARGET_DIR:-target/cuda}"
nvcc --version | tail -1
cargo build --release --locked -p qd-quant --features cuda --example gpu_check
mkdir -p tools/gpu
cp "$CARGO_TARGET_DIR/release/examples/gpu_check" tools/gpu/qd-gpu-check
strip tools/gpu/qd-gpu-check
ls -la tools/gpu/qd-gpu-check
