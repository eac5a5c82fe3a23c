#!/usr/bin/env bash
# Runs on the lent GPU machine (no Rust there): points the loader at the machine's CUDA 13
# libraries and runs tools/gpu/qd-gpu-check built by tools/build-cuda.sh. Changes no GPU setting.
set -u
cd "$(dirname "$0")/.."
BIN=tools/gpu/qd-gpu-check
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -2
DIRS=""
for so in libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libnvrtc.so.13; do
  d="$( { ls /usr/local/cuda/lib64/"$so" /usr/local/cuda-13*/lib64/"$so" 2>/dev/null;
          find /usr/local /opt -name "$so" 2>/dev/null; } | head -1)"
  [ -n "$d" ] || { echo "!! $so not found"; continue; }
  d="$(dirname "$d")"
  case ":$DIRS:" in *":$d:"*) ;; *) DIRS="${DIRS:+$DIRS:}$d";; esac
done
export LD_LIBRARY_PATH="$DIRS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
chmod +x "$BIN" 2>/dev/null
timeout 240 "$BIN"
