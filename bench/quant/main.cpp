// Entry point of bench_quant: Google Benchmark's main plus the machine context (CPU model, cores,
// memory) that results are read against; it also lands in the JSON output ("context").
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <thread>

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

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  const double mem = double(sysconf(_SC_PHYS_PAGES)) * double(sysconf(_SC_PAGE_SIZE));
  char gib[32];
  std::snprintf(gib, sizeof(gib), "%.1f", mem / double(1ull << 30));
  benchmark::AddCustomContext("frugal_cpu_model", cpu_model());
  benchmark::AddCustomContext("frugal_hardware_threads",
                              std::to_string(std::thread::hardware_concurrency()));
  benchmark::AddCustomContext("frugal_memory_gib", gib);
  benchmark::AddCustomContext("frugal_cuda_devices", std::to_string(frugal::cuda_device_count()));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
