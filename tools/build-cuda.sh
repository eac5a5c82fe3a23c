#!/usr/bin/env bash
# The CUDA side, here (no GPU needed). Two modes:
#
#   tools/build-cuda.sh --check   keeps the `cuda` feature compiling: clippy -D warnings over the
#                                 whole CLI built with --features cuda (candle's CUDA backend and
#                                 kernels, our fake-quant kernels, the device paths). tools/test.sh
#                                 runs it. Exit 3: the CUDA wheels could not be fetched.
#   tools/build-cuda.sh           builds everything tools/gpu-check.sh runs on a lent GPU machine
#                                 into tools/gpu/, packed as tools/gpu.tar.xz (both ignored by git;
#                                 carry the archive with the device tool's `carry:
#                                 ["tools/gpu.tar.xz"]`: the binaries are 120 MB, mostly PTX text,
#                                 a call carries at most 64 MiB, packed they are ~16 MB):
#       qat-distill            the CLI with --features cuda (device-check, train/eval/bench --device cuda)
#       qd-gpu-check           the fake-quant kernels' throughput check (qd-quant's gpu_check example)
#       teacher.skeleton.gguf  the real teacher's metadata, tokenizer and tensor list, no weights
#                              (the 241 MB teacher cannot travel; device-check makes random weights
#                              of its exact shape there)
#
# The toolchain: CUDA 13.0 from PyPI wheels, once per machine (nvcc, headers, link-time
# libraries, and a link-only libcuda stub whose every cu* symbol returns
# CUDA_ERROR_STUB_LIBRARY; the real libcuda.so.1 comes from a GPU machine's driver), under
# ${CUDA_BUILD_ROOT:-~/.cache/cuda-build} (~1.2 GB). nvcc stays at 13.0.x: the GPU machine's
# driver (580, CUDA 13.0) rejects newer PTX. Kernels are PTX for compute_${CUDA_COMPUTE_CAP}: the
# driver compiles it for the GPU it finds, so one binary runs on sm_80 and later (A100, laptop
# RTX 30/40, Jetson Orin, L4, H100/H200). Build folders live in the machine's cache, so candle's
# kernels are compiled by nvcc once per machine, not once per clone (~10 min on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=build
case "${1:-}" in
    --check) MODE=check ;;
    "") ;;
    *) echo "build-cuda.sh: unknown argument '$1' (only --check)" >&2; exit 2 ;;
esac

toolchain() {
    local root=${CUDA_BUILD_ROOT:-$HOME/.cache/cuda-build}
    local ch="$root/cuda"
    mkdir -p "$root"
    if [[ ! -x "$ch/bin/nvcc" || ! -f "$ch/lib64/stubs/libcuda.so" ]]; then
        if [[ ! -x "$root/venv/bin/python" ]]; then python3 -m venv "$root/venv" >&2; fi
        if ! "$root/venv/bin/pip" install -q --disable-pip-version-check \
            nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 \
            nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 \
            nvidia-cublas==13.0.0.19 nvidia-curand==10.4.0.35 nvidia-cuda-nvrtc==13.0.48 >&2; then
            echo "build-cuda.sh: pip could not install the CUDA wheels" >&2
            return 3
        fi
        local w
        w="$("$root/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/nvidia/cu13"
        mkdir -p "$ch/lib64/stubs"
        for d in bin include nvvm; do ln -sfn "$w/$d" "$ch/$d"; done
        for l in libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libnvrtc.so.13; do
            ln -sfn "$w/lib/$l" "$ch/lib64/$l"
            ln -sfn "$w/lib/$l" "$ch/lib64/${l%%.so.*}.so"
        done
        grep -ohE '\bcu[A-Z][A-Za-z0-9_]*' "$w/include/cuda.h" | sort -u \
            | sed 's/.*/int &(void){return 34;}/' > "$ch/lib64/stubs/libcuda-stub.c"
        gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$ch/lib64/stubs/libcuda.so" \
            "$ch/lib64/stubs/libcuda-stub.c"
    fi
    echo "$ch"
}

rc=0; CH="$(toolchain)" || rc=$?
[[ $rc -eq 0 ]] || exit "$rc"
CACHE=${QAT_DISTILL_CACHE:-$HOME/.cache/qat-distill}
export CUDA_HOME="$CH" PATH="$CH/bin:$PATH"
nvcc --version | tail -1 >&2

if [[ $MODE == check ]]; then
    export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
    export CARGO_TARGET_DIR="${CUDA_TARGET_DIR:-$CACHE/target-cuda}"
    cargo clippy --release --locked -p qat-distill --features cuda --all-targets -- -D warnings
    echo "build-cuda.sh --check: the cuda feature compiles and is clippy-clean"
    exit 0
fi

export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-80}"
export CARGO_TARGET_DIR="${CUDA_TARGET_DIR:-$CACHE/target-cuda-sm$CUDA_COMPUTE_CAP}"
cargo build --release --locked -p qat-distill --features cuda
cargo build --release --locked -p qd-quant --features cuda --example gpu_check
mkdir -p tools/gpu
cp "$CARGO_TARGET_DIR/release/qat-distill" tools/gpu/qat-distill
cp "$CARGO_TARGET_DIR/release/examples/gpu_check" tools/gpu/qd-gpu-check
strip tools/gpu/qat-distill tools/gpu/qd-gpu-check
TEACHER="$(tools/fetch-teacher.sh)"
# The CUDA binary needs the driver's libcuda, which only the GPU machine has: the host build
# writes the skeleton.
unset CARGO_TARGET_DIR
cargo run --release --locked -q -p qat-distill -- \
    synth --like "$TEACHER" --skeleton --out tools/gpu/teacher.skeleton.gguf --force
tar -C tools -cf - gpu | xz -6 -T0 > tools/gpu.tar.xz.tmp && mv tools/gpu.tar.xz.tmp tools/gpu.tar.xz
ls -la tools/gpu tools/gpu.tar.xz
