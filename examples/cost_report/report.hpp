#pragma once
// The cost report's data model: a list of rows, each of which measures one way of holding the
// same weights (or, later, of training with them) and produces a Record of named numeric fields.
// The printers take the union of the fields in order of first appearance, so a new row kind
// (training time, peak memory, accuracy) only adds fields; nothing else changes.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace cost_report {

/// One measured number: JSON key, table header, unit (shown under the header) and how many
/// decimals the table prints (the JSON keeps full precision).
struct Field {
  std::string key;
  std::string header;
  std::string unit;
  double value = 0;
  int decimals = 2;
  bool scientific = false;  ///< table prints %.2e (for errors spanning many decades)
  bool in_table = true;     ///< false: JSON only (exact counts the table shows rounded)
};

/// What one row produced: a name, a one-line description, and its fields.
struct Record {
  std::string name;
  std::string description;
  std::vector<Field> fields;

  Record& add(std::string key, std::string header, std::string unit, double value, int decimals,
              bool scientific = false) {
    fields.push_back(
        {std::move(key), std::move(header), std::move(unit), value, decimals, scientific});
    return *this;
  }
};

/// Facts about the run printed in the header and stored in the JSON.
struct RunInfo {
  int64_t params = 0;
  int cores = 0;
  int threads = 0;  ///< 0 = all cores
  std::string cpu_model;
  uint64_t seed = 0;
  double link_gbps = 25;
  int runs = 3;
  std::string weights;             ///< how the weights were drawn
  std::vector<std::string> notes;  ///< legend lines printed under the table
};

/// An aligned text table of the records (header, units, one line per record).
void print_table(const RunInfo& info, const std::vector<Record>& records);

/// The same as JSON, written atomically to `path` (temporary file in the same folder, then
/// rename). Throws std::runtime_error on an I/O failure.
void write_json(const std::string& path, const RunInfo& info, const std::vector<Record>& records);

}  // namespace cost_report
