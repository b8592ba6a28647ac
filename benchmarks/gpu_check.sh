#!/usr/bin/env bash
# One prepared run for a lent GPU (H100/H200; torch 2.11, triton 3.6, python 3.12, no network).
#
#   bash benchmarks/gpu_check.sh            # from the repository root
#
# 1. installs the checkout (--no-deps: the machine's torch/triton stay as they are);
# 2. smoke: one sample_rows + select call on CUDA;
# 3. the kernel benchmark (benchmarks/bench_kernels_gpu.py): copy bandwidth, row-kernel
#    roofline, launch-config sweep, whole step vs LLaDA-style and torch backend;
# 4. pytest -m gpu (tests/test_gpu.py): LLaDA-vocab bit-equality, no host sync, CUDA graph;
# 5. tests/test_kernels.py on CUDA (the interpreter tests, now on the real compiler);
# 6. the AOT check (kernels/aot.py) with this machine's triton.
# 7. the pytest-benchmark suites on CUDA: the step (every backend, one table) and the whole
#    generate loop with a LLaDA-8B-shaped random-weight model (model / sample / select split);
# 8. fastremask profile of that loop (Chrome trace, top operators).
# 9. the static kernel cost report (python -m fastremask.kernels.cost): predictions to set
#    beside the measured roofline;
# 10. benchmarks/cache_speed.py on the LLaDA-8B shape (native model, random bf16 weights built on
#    the GPU): generate end to end, cache None/prefix/dual against LLaDA's sampler restated.
# 11. benchmarks/truncation_gpu.py: top-p 0.95 + top-k 50 (issue 19) bit-equal to the reference,
#    timed against the plain call, the cut alone, the published sort-based code and FlashInfer.
# 12. benchmarks/block_models_gpu.py: block diffusion (issue 22) on LLaDA2-mini's shape (the MoE
#    built in memory, random bf16 weights), batch 1 and 8, block 32: tokens/s of the exact block
#    cache against the published full-window recompute, and the share of a step outside the model;
#    then batch 1 with classifier-free guidance (2B rows per call, the cache keeping both halves).
#    (Prepared, not yet run on a GPU. Block-causal steps run eagerly, not as CUDA graphs: the
#    share outside the model measured here is what capturing them could save.)
# Each step has its own timeout and its failure does not stop the others; a step that would
# start after BUDGET_S seconds is skipped (the lent machine's time is short). Logs go to a
# work folder that is packed into $OUT/logs.tgz at the end, so that the few files the GPU tool
# returns hold everything (set by the GPU tool; default benchmarks/results/gpu-<date>/).
set -u -o pipefail
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/results/gpu-$(date +%Y%m%d-%H%M%S)}"
LOGS="$(mktemp -d)/logs"
mkdir -p "$OUT" "$LOGS"
T0=$(date +%s)
BUDGET_S="${BUDGET_S:-420}"
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"

step() {  # step NAME TIMEOUT_S CMD...: run, log to $OUT/NAME.log, record rc and seconds
  local name=$1 limit=$2; shift 2
  local t=$(date +%s)
  if (( t - T0 > BUDGET_S )); then echo "$name skipped (past ${BUDGET_S}s)" | tee -a "$SUMMARY"; return; fi
  echo "+ [$(( t - T0 ))s] $name: $*"
  timeout --kill-after=10 "$limit" "$@" > "$LOGS/$name.log" 2>&1
  local rc=$?
  tail -n 25 "$LOGS/$name.log"
  echo "$name rc=$rc $(( $(date +%s) - t ))s" | tee -a "$SUMMARY"
}

{ nvidia-smi; python -c "import sys, torch, triton; print(sys.version); print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__); print(torch.cuda.get_device_name())"; git rev-parse HEAD; git status --short; } > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt" | head -40

step install 60 python -m pip install --no-deps --no-build-isolation -e .
step smoke 40 python - <<'EOF'
import torch
from fastremask.sampler import reference as ref
from fastremask.sampler.names import REMASKING
from fastremask.kernels import sample_rows, select
lg = torch.randn(64, 126464, device="cuda").to(torch.bfloat16)
r = torch.arange(32, device="cuda")
for T in (0.0, 1.0):
    for rm in REMASKING:
        got = sample_rows(lg, r, r, r, 1, temperature=T, remasking=rm)
        want = ref.sample_rows(lg, r, r, r, 1, temperature=T, remasking=rm)
        same = torch.equal(got.x0, want.x0) and torch.equal(got.confidence.view(torch.int32), want.confidence.view(torch.int32))
        print(f"T={T} {rm:15} bit-equal={same}")
keep = select(got.confidence.view(4, 8), torch.ones(4, 8, dtype=torch.bool, device="cuda"),
              torch.zeros(4, 8, dtype=torch.bool, device="cuda"), torch.full((4,), 2, device="cuda"), None)
print("select kept per row:", keep.sum(1).tolist())
EOF
step test_gpu 110 python -m pytest -m gpu tests/test_gpu.py tests/test_graphs.py -v -rA -p no:cacheprovider --junitxml="$LOGS/test_gpu.xml"
step cache_speed 200 python benchmarks/cache_speed.py --device cuda --llada-8b --prompt 512 --gen 256 --block 32 --rounds 3 --no-threshold --json "$OUT/cache_speed.json"
step bench 120 python benchmarks/bench_kernels_gpu.py --out "$OUT"
step bench_generate 110 fastremask bench --suites generate --backends llada,torch,triton --rounds 1 --json "$OUT/bench_generate.json"
step bench_step 90 fastremask bench --suites step --rounds 5 --json "$OUT/bench_step.json"
step test_kernels 60 python -m pytest tests/test_kernels.py -q -p no:cacheprovider -k "not property and not generate" --junitxml="$LOGS/test_kernels.xml"
step profile 60 fastremask profile --model llada-8b --backend triton --prompt-length 128 --gen-length 64 --block-length 32 --steps 64 --out "$LOGS/trace.json"
step aot 35 python -m fastremask.kernels.aot --quick --json "$LOGS/aot.json"
# the static count with this machine's triton: the predicted times to set beside bench's measured ones
step truncation 60 python benchmarks/truncation_gpu.py --rows 256 --out "$OUT"
step block_models 240 python benchmarks/block_models_gpu.py --device cuda --json "$OUT/block_models.json"
step block_models_cfg 150 python benchmarks/block_models_gpu.py --device cuda --batch 1 --cfg 1.0 --json "$OUT/block_models_cfg.json"
step cost 90 python -m fastremask.kernels.cost --arch 90 --json "$OUT/kernel_cost.json" --md "$OUT/kernel_cost.md"

echo "total $(( $(date +%s) - T0 ))s" | tee -a "$SUMMARY"
tar -czf "$OUT/logs.tgz" -C "$(dirname "$LOGS")" logs
cat "$SUMMARY"
[ -f "$OUT/kernels_gpu.txt" ] && cat "$OUT/kernels_gpu.txt"
exit 0
