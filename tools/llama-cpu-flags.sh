#!/usr/bin/env bash
# The CMake flags for llama.cpp builds that run on the CPU they are built on, and a cache tag
# for them, printed as two lines: TAG, then FLAGS. Never -march=native on x86 (GCC 12's native
# build crashes in ggml's AMX kernels on Sapphire Rapids) and never a flag the CPU lacks (an
# AVX-512 or AVX-VNNI build dies with SIGILL where those are missing): each x86 extension is
# switched on only when /proc/cpuinfo lists it. The AVX-512 + VNNI set keeps the empty tag, so
# caches built before this script stay valid.
# LLAMA_CPU=avx2 asks for the AVX2-only build a laptop without AVX-512 runs (-DGGML_AVX2=ON
# -DGGML_FMA=ON -DGGML_F16C=ON, AVX-512 and AVX-VNNI off), for comparisons at that level.
set -euo pipefail
has() { grep -qw "$1" /proc/cpuinfo 2>/dev/null; }
if [[ "$(uname -m)" != x86_64 ]]; then
    # Arm and others: ggml's native build picks NEON/dotprod/i8mm from the compiler.
    echo "-native-$(uname -m)"
    echo "-DGGML_NATIVE=ON"
    exit 0
fi
if [[ "${LLAMA_CPU:-}" == avx2 ]]; then
    echo "-avx2only"
    echo "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
    exit 0
fi
[[ -z "${LLAMA_CPU:-}" ]] || { echo "LLAMA_CPU=$LLAMA_CPU: only 'avx2' is known" >&2; exit 2; }
flags=(-DGGML_NATIVE=OFF)
tag=""
for f in avx:AVX avx2:AVX2 fma:FMA f16c:F16C; do
    if has "${f%%:*}"; then flags+=("-DGGML_${f##*:}=ON"); else tag+="-no${f%%:*}"; fi
done
if has avx512f && has avx512bw && has avx512vl && has avx512dq; then
    flags+=(-DGGML_AVX512=ON)
    if has avx512_vnni; then flags+=(-DGGML_AVX512_VNNI=ON); else tag+="-novnni"; fi
else
    tag+="-noavx512"
fi
echo "$tag"
echo "${flags[*]}"
