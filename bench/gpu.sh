#!/usr/bin/env bash
# The GPU benchmark: every method's img/s (ResNet-50, 224 px, bf16, channels_last, batch 16 and 128),
# torch.compile for ERM/ActDiff, and trial packing (K trainings per GPU). Under 5 minutes of GPU time.
# Needs the decoy-cxr cache under ./data (made by any `dgx train` on decoy-cxr) for its training check.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-bench/results}"
mkdir -p "$out"
PYTHONPATH=. python3 bench/gpu_check.py --out "$out/gpu.json"
