// Entry point of bench_nn: Google Benchmark's main.
#include <benchmark/benchmark.h>

BENCHMARK_MAIN();
