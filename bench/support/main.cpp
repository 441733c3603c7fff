// The main of every benchmark binary (a module replaces it with bench/<module>/main.cpp when it
// needs its own, as bench_parallel does for MPI): Google Benchmark's main plus the machine context
// (cores, threads, memory, CPU model, CUDA devices) that every result is read against; the context
// also lands in the JSON output (--benchmark_format=json, "context" object).
#include <benchmark/benchmark.h>
#include <tbb/info.h>
#include <unistd.h>

#include <fstream>
#include <string>
#include <thread>

#include "frugal/core/build_config.hpp"
#include "frugal/core/device.hpp"

namespace {

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("model name", 0) == 0) {
      const auto colon = line.find(':');
      if (colon != std::string::npos) return line.substr(line.find_first_not_of(' ', colon + 1));
    }
  }
  return "unknown";
}

std::string gib(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f", bytes / double(1ull << 30));
  return buf;
}

void add_machine_context() {
  const double mem = double(sysconf(_SC_PHYS_PAGES)) * double(sysconf(_SC_PAGE_SIZE));
  benchmark::AddCustomContext("frugal_cpu_model", cpu_model());
  benchmark::AddCustomContext("frugal_hardware_threads",
                              std::to_string(std::thread::hardware_concurrency()));
  benchmark::AddCustomContext("frugal_tbb_default_concurrency",
                              std::to_string(tbb::info::default_concurrency()));
  benchmark::AddCustomContext("frugal_memory_gib", gib(mem));
  benchmark::AddCustomContext("frugal_cuda_devices", std::to_string(frugal::cuda_device_count()));
  benchmark::AddCustomContext("frugal_stream_note",
                              "STREAM copy/triad GB/s are this machine's memory-bandwidth limit");
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  add_machine_context();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
