#!/usr/bin/env bash
# Runs each libFuzzer target of a STEPC_BUILD_FUZZERS build for a bounded time
# on a copy of its committed seed corpus (tests/fuzz/corpus/<target>/), and
# prints the executions per target. New coverage stays in BUILD/fuzz-work;
# a finding is written to BUILD/fuzz-findings and fails the run: add it to
# the corpus and to tests/test_fuzz_regressions.cpp, then fix its cause.
# Usage: scripts/fuzz.sh BUILD SECONDS [GRAPH_SECONDS]: each reader fuzzer runs
# SECONDS; fuzz_graph, which compiles two graphs per input (about one input
# a second), GRAPH_SECONDS (default SECONDS).
set -euo pipefail
build=$1
reader_seconds=$2
graph_seconds=${3:-$2}
root=$(cd "$(dirname "$0")/.." && pwd)
findings=$build/fuzz-findings
mkdir -p "$findings"

failed=()
printf '%-12s %8s %10s %8s %8s %s\n' target seconds executions exec/s corpus result
for target in sg npy safetensors onnx graph; do
  work=$build/fuzz-work/$target
  mkdir -p "$work"
  cp -n "$root/tests/fuzz/corpus/$target/"* "$work/"
  log=$build/fuzz-work/$target.log
  seconds=$reader_seconds
  [ "$target" = graph ] && seconds=$graph_seconds
  # -timeout: one graph compiles in well under a second; a minute is a hang.
  # -rss_limit_mb: LLVM's JIT and the ONNX importer stay far below it.
  if "$build/fuzz/fuzz_$target" -max_total_time="$seconds" -timeout=60 -rss_limit_mb=4096 \
       -print_final_stats=1 -artifact_prefix="$findings/$target-" "$work" >"$log" 2>&1; then
    result=ok
  else
    result="FAILED (log: $log)"
    failed+=("$target")
    tail -n 40 "$log" >&2
  fi
  executions=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
  size=$(ls "$work" | wc -l)
  printf '%-12s %8s %10s %8s %8s %s\n' "$target" "$seconds" "${executions:-?}" "${rate:-?}" "$size" "$result"
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: findings in ${failed[*]}; inputs under $findings:" >&2
  ls "$findings" >&2
  exit 1
fi
