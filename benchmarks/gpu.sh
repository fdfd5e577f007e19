#!/usr/bin/env bash
# The GPU benchmarks in one command, at most 8 minutes on one lent GPU (no network; GPT-2 medium/large are built from
# conf/model/*.yaml with random weights, which is all speed and memory need):
#   here:        ../shared/tools/device-stage            # the wheels the GPU image lacks (hydra, omegaconf, datasets, ...)
#   on the GPU:  bash benchmarks/gpu.sh                  # carry: [".device"]; reports -> results/benchmarks/*_gpu.{md,json}
# Table 1 latency grid (full size), training throughput + memory (GPT-2 M/L: full FT, LoRA, fast path, peft) and the
# same with torch.compile (batch 8 x 512, medium then large while time is left); each piece time-boxed, summary in
# gpu_suite_gpu.md (what ran, how long, what was cut or skipped and why).
#
# Tiny shapes on a CPU (what tests/test_benchmarks.py runs; no GPU needed, torch.compile piece skipped and said so):
#   LORA_REPRO_BENCH_SIZE=tiny bash benchmarks/gpu.sh OUTDIR      (or: bash benchmarks/gpu.sh --tiny OUTDIR)
set -euo pipefail
cd "$(dirname "$0")/.."
size="${LORA_REPRO_BENCH_SIZE:-gpu}"
out=""
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --tiny) size=tiny; shift;;
    --total) extra+=(--total "$2"); shift 2;;
    -h|--help) sed -n '2,12p' "$0"; exit 0;;
    -*) echo "gpu.sh: unknown option $1 (use --tiny, --total S, or an output folder)" >&2; exit 2;;
    *) out="$1"; shift;;
  esac
done
case "$size" in
  gpu) out="${out:-results/benchmarks}";;
  tiny) [ -n "$out" ] || { echo "gpu.sh: tiny shapes need an output folder (they must not replace the GPU reports):" \
           "LORA_REPRO_BENCH_SIZE=tiny bash benchmarks/gpu.sh OUTDIR" >&2; exit 2; };;
  *) echo "gpu.sh: LORA_REPRO_BENCH_SIZE=$size; choices: gpu, tiny" >&2; exit 2;;
esac
py="${PYTHON:-}"
if [ -z "$py" ]; then
  if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
fi
# On the GPU machine: the staged wheels (../shared/tools/device-stage) where the image lacks them
if ! "$py" -c "import omegaconf, hydra, datasets" 2>/dev/null; then
  if ls .device/whl/*.whl >/dev/null 2>&1; then
    site="${TMPDIR:-/tmp}/lora_repro_site"
    "$py" -m pip install -q --no-index --no-deps --no-compile --target "$site" .device/whl/*.whl
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
  else
    echo "gpu.sh: omegaconf/hydra/datasets are missing and .device/whl has no wheels: run ../shared/tools/device-stage" \
         "here first and carry .device" >&2
    exit 2
  fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec "$py" -m benchmarks.gpu_suite --size "$size" --out "$out" ${extra[@]+"${extra[@]}"}
