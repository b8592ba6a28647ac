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
# Each step has its own timeout and its failure does not stop the others; everything goes to
# $OUT (set by the GPU tool; default benchmarks/results/gpu-<date>/). Worst case (every step
# at its timeout) ~7.5 min, typically ~4.
set -u -o pipefail
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/results/gpu-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
T0=$(date +%s)
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"

step() {  # step NAME TIMEOUT_S CMD...: run, log to $OUT/NAME.log, record rc and seconds
  local name=$1 limit=$2; shift 2
  local t=$(date +%s)
  echo "+ [$(( t - T0 ))s] $name: $*"
  timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  tail -n 25 "$OUT/$name.log"
  echo "$name rc=$rc $(( $(date +%s) - t ))s" | tee -a "$SUMMARY"
}

{ nvidia-smi; python -c "import sys, torch, triton; print(sys.version); print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__); print(torch.cuda.get_device_name())"; git rev-parse HEAD; git status --short; } > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt" | head -40

step install 60 python -m pip install --no-deps --no-build-isolation -e .
step smoke 40 python - <<'EOF'
import torch
from fastremask import reference as ref
from fastremask.kernels import sample_rows, select
lg = torch.randn(64, 126464, device="cuda").to(torch.bfloat16)
r = torch.arange(32, device="cuda")
for T in (0.0, 1.0):
    for rm in ref.REMASKING:
        got = sample_rows(lg, r, r, r, 1, temperature=T, remasking=rm)
        want = ref.sample_rows(lg, r, r, r, 1, temperature=T, remasking=rm)
        same = torch.equal(got.x0, want.x0) and torch.equal(got.confidence.view(torch.int32), want.confidence.view(torch.int32))
        print(f"T={T} {rm:15} bit-equal={same}")
keep = select(got.confidence.view(4, 8), torch.ones(4, 8, dtype=torch.bool, device="cuda"),
              torch.zeros(4, 8, dtype=torch.bool, device="cuda"), torch.full((4,), 2, device="cuda"), None)
print("select kept per row:", keep.sum(1).tolist())
EOF
step bench 130 python benchmarks/bench_kernels_gpu.py --out "$OUT"
step test_gpu 110 python -m pytest -m gpu tests/test_gpu.py -v -rA -p no:cacheprovider --junitxml="$OUT/test_gpu.xml"
step test_kernels 75 python -m pytest tests/test_kernels.py -v -p no:cacheprovider -k "not property and not generate" --junitxml="$OUT/test_kernels.xml"
step aot 35 python -m fastremask.kernels.aot --quick --json "$OUT/aot.json"

echo "total $(( $(date +%s) - T0 ))s" | tee -a "$SUMMARY"
cat "$SUMMARY"
[ -f "$OUT/kernels_gpu.txt" ] && cat "$OUT/kernels_gpu.txt"
exit 0
