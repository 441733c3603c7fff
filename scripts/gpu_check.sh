#!/usr/bin/env bash
# The GPU check (DESIGN.md §8) in two halves, so a borrowed GPU machine needs one call:
#
#   scripts/gpu_check.sh pack      here: build the CUDA tests and benchmarks (sm_90) and bundle them,
#                                  with the non-CUDA shared libraries they need, into out/gpu_bundle
#   scripts/gpu_check.sh run       on the GPU machine (from the repository root, out/gpu_bundle
#                                  carried): run every gpu-labelled test binary and the benchmarks,
#                                  write $OUT/report.md plus the raw JSON
#
# The GPU machine has nvcc, the CUDA libraries and PyTorch (whose wheels carry cuDNN and NCCL) but no
# Debian -dev packages, hence the bundle. A GPU test that skips there counts as a failure: a GPU run
# that skips its tests has not run them.
set -euo pipefail
cd "$(dirname "$0")/.."
bundle=out/gpu_bundle

pack() {
  local build=build-gpu
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DFRUGAL_WITH_CUDA=ON -DFRUGAL_BUILD_EXAMPLES=ON -DFRUGAL_CPU_ARCH=x86-64-v3
  cmake --build "$build" -j "$(nproc)"
  rm -rf "$bundle" && mkdir -p "$bundle/bin" "$bundle/lib"
  local bins=()
  for b in "$build"/tests/*_cuda_tests "$build"/bench/bench_* "$build"/examples/cost_report; do
    [ -x "$b" ] && bins+=("$b")
  done
  cp "${bins[@]}" "$bundle/bin/"
  # Shared libraries outside libc and outside the CUDA toolkit (the GPU machine has its own).
  for b in "${bins[@]}"; do
    ldd "$b" | awk '/=> \//{print $3}'
  done | sort -u | grep -v -E '/(libc|libm|libpthread|libdl|librt|libgcc_s|libstdc\+\+|ld-linux)[.-]' \
    | grep -v -E 'lib(cuda|cudart|cublas|cublasLt|cusolver|cusparse|cudnn|nccl|nvJitLink|curand|cufft)[._]' \
    | while read -r lib; do cp -L "$lib" "$bundle/lib/"; done
  strip --strip-unneeded "$bundle"/bin/* "$bundle"/lib/* 2>/dev/null || true
  du -sh "$bundle"
}

# Library folders of CUDA, cuDNN and NCCL on the GPU machine (toolkit, then PyTorch's wheels).
cuda_lib_path() {
  local dirs=(/usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib)
  local site
  site=$(python3 -c 'import site; print(" ".join(site.getsitepackages()))' 2>/dev/null || true)
  for s in $site; do
    for d in "$s"/nvidia/*/lib "$s"/torch/lib; do [ -d "$d" ] && dirs+=("$d"); done
  done
  local IFS=:
  echo "${dirs[*]}"
}

run() {
  local out=${OUT:-out/gpu_report}
  mkdir -p "$out"
  export LD_LIBRARY_PATH="$PWD/$bundle/lib:$(cuda_lib_path):${LD_LIBRARY_PATH:-}"
  local report="$out/report.md" status=0
  {
    echo "# GPU check $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    echo '```'
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || true
    echo '```'
    echo
    echo "| binary | tests | passed | failed | skipped |"
    echo "| --- | --- | --- | --- | --- |"
  } > "$report"
  for t in "$bundle"/bin/*_cuda_tests; do
    [ -x "$t" ] || continue
    local name json
    name=$(basename "$t")
    json="$out/$name.json"
    timeout 300 "$t" --gtest_output="json:$json" > "$out/$name.log" 2>&1 || status=1
    python3 - "$json" "$name" >> "$report" <<'PY' || status=1
import json, sys
path, name = sys.argv[1], sys.argv[2]
try:
    d = json.load(open(path))
except Exception as e:
    print(f"| {name} | ? | ? | ? | ? (no JSON: {e}) |"); sys.exit(1)
tests = [t for s in d["testsuites"] for t in s["testsuite"]]
skipped = sum(1 for t in tests if t.get("result") == "SKIPPED")
failed = sum(1 for t in tests if "failures" in t)
print(f"| {name} | {len(tests)} | {len(tests) - failed - skipped} | {failed} | {skipped} |")
for s in d["testsuites"]:
    for t in s["testsuite"]:
        for f in t.get("failures", []):
            print(f"\n{s['name']}.{t['name']}: {f['failure'][:400]}\n")
sys.exit(1 if failed or skipped else 0)
PY
  done
  echo >> "$report"
  for b in "$bundle"/bin/bench_*; do
    [ -x "$b" ] || continue
    local name
    name=$(basename "$b")
    timeout 240 "$b" --benchmark_filter="${BENCH_FILTER:-Cuda|GPU|Gpu}" --benchmark_min_time=0.1 \
      --benchmark_format=json --benchmark_out="$out/$name.json" > "$out/$name.log" 2>&1 || status=1
    echo "- $name: $(grep -c '"name"' "$out/$name.json" 2>/dev/null || echo 0) results in $name.json" >> "$report"
  done
  echo >> "$report"
  echo "exit status: $status" >> "$report"
  cat "$report"
  return $status
}

case "${1:-}" in
  pack) pack ;;
  run) run ;;
  *) echo "usage: $0 pack|run" >&2; exit 2 ;;
esac
