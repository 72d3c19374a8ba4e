#!/usr/bin/env bash
# The GPU benchmark of issue 16, one script in <= 8 minutes on one H200 (bench/gpu_check.py, time-boxed by
# --budget-s): step ratios with and without the second-order route (ResNet-50, 224 px, bf16, channels_last,
# batch 16 and 128) and peak memory, packed trials (K = 1, 2, 4, 8 as one network), the throughput table for
# `dgx reproduce --throughput`, trial packing by processes, the loader's share, a training check, CUDA graphs
# and torch.compile. Writes gpu.json and throughput.json into $OUT when set (the device tool brings $OUT
# back), else into bench/results/. Generates the decoy-cxr cache under ./data when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-bench/results}"
mkdir -p "$out"
PYTHONPATH=. PYTHONUNBUFFERED=1 python3 bench/gpu_check.py --out "$out/gpu.json" --table "$out/throughput.json" "$@" \
  2>&1 | tee "$out/gpu.log"
