// Entry point of bench_prune: Google Benchmark's main.
#include <benchmark/benchmark.h>

BENCHMARK_MAIN();
