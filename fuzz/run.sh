#!/usr/bin/env bash
# Runs a libFuzzer binary for a bounded time on a copy of its seed corpus.
#   fuzz/run.sh <binary> <seconds>
# Exits non-zero when the fuzzer finds a crash; the reproducer is kept in artifacts/ beside the
# binary.
set -euo pipefail

if [ $# -ne 2 ]; then
  echo "usage: $0 <fuzzer binary> <seconds>" >&2
  exit 2
fi
binary=$1
seconds=$2
here=$(cd "$(dirname "$0")" && pwd)
name=$(basename "$binary")
seeds="$here/corpus/${name#fuzz_}"

work=$(mktemp -d "${TMPDIR:-/tmp}/frugal-$name.XXXXXX")
trap 'rm -rf "$work"' EXIT
artifacts="$(cd "$(dirname "$binary")" && pwd)/artifacts"
mkdir -p "$work/corpus" "$artifacts"
if [ -d "$seeds" ]; then cp -r "$seeds/." "$work/corpus/"; fi

dict=()
if [ -f "$here/${name#fuzz_}.dict" ]; then dict=(-dict="$here/${name#fuzz_}.dict"); fi

echo "[fuzz] $name for ${seconds}s on $(ls "$work/corpus" | wc -l) seeds"
# The fuzzer's progress goes to a log beside the artifacts; the summary and any crash are printed.
log="$artifacts/$name.log"
status=0
"$binary" "$work/corpus" -max_total_time="$seconds" -max_len=4096 -rss_limit_mb=2048 \
  -timeout=10 -print_final_stats=1 "${dict[@]}" -artifact_prefix="$artifacts/$name-" \
  > "$log" 2>&1 || status=$?
if [ "$status" -ne 0 ]; then
  tail -n 60 "$log"
  echo "[fuzz] $name FAILED (exit $status); log: $log" >&2
  exit "$status"
fi
grep -E '^stat::(number_of_executed_units|peak_rss_mb)' "$log" || true
echo "[fuzz] $name: no crash in ${seconds}s"
