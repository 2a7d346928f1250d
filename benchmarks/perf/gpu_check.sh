#!/usr/bin/env bash
# The prepared GPU check of issue 17: on one GPU, in at most 8 minutes, the CUDA-marked tests, then the perf grid on
# 7B/3B-like random models (bf16, 256-token prompts, batch 1/8/32), JSON and logs under the folder given.
# Written without a GPU: it has not run yet. Run it from the repository root with the project installed:
#     benchmarks/perf/gpu_check.sh OUT_DIR
# Partial perf JSON is written after each method group, so a run cut by the time limit still leaves figures.
set -uo pipefail
out="${1:?usage: benchmarks/perf/gpu_check.sh OUT_DIR}"
mkdir -p "$out"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
budget=470  # seconds for everything below (8 minutes less start-up slack)
start=$SECONDS

python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device visible')" || exit 2
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/gpu.csv" 2>&1 || true

echo "== CUDA-marked tests"
timeout 150 python -m pytest -q -m cuda tests/test_cuda.py --junitxml "$out/cuda_tests.xml" -p no:cacheprovider \
    2>&1 | tee "$out/cuda_tests.log"
tests_rc=${PIPESTATUS[0]}

echo "== perf grid, 7b-3b shapes (random weights)"
left=$((budget - (SECONDS - start)))
timeout "$left" antidistill bench perf --shape 7b-3b --vocab 152064 --batch-sizes 1 8 32 --new-tokens 64 \
    --prompt-length 256 --repeats 3 --methods plain proxy ads-fd ads-fd-no-transpose ads-head reference \
    --json "$out/perf-7b3b.json" --markdown "$out/perf-7b3b.md" --no-progress 2>&1 | tee "$out/perf.log"
perf_rc=${PIPESTATUS[0]}

echo "cuda tests rc=$tests_rc, perf rc=$perf_rc (124: cut by the time limit; see the partial JSON), $((SECONDS - start)) s"
[ "$tests_rc" -eq 0 ] && [ "$perf_rc" -eq 0 ]
