// bench_lowrank: randomized SVD beside the GEMMs it does and beside a full BDCSVD (one process,
// one run). See bench_lowrank.cpp and docs/lowrank.md.
#include <benchmark/benchmark.h>

BENCHMARK_MAIN();
