#pragma once
// The cost report's data model: sections of rows. A row measures one workload (a storage format
// of the same weights, a training run) in one variant (fp32 baseline, and later each optimized
// technique beside it) and produces a Record of named numeric fields. Each section prints as its
// own table whose columns are the union of its records' fields in order of first appearance, so
// a new row kind or variant only adds fields; nothing else changes.
#include <cstdint>
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

/// What one row produced: its section, workload name, variant ("fp32" for a baseline; empty for
/// sections without variants), a one-line description, and its fields.
struct Record {
  std::string section;
  std::string name;
  std::string variant;
  std::string description;
  std::vector<Field> fields;

  Record& add(std::string key, std::string header, std::string unit, double value, int decimals,
              bool scientific = false) {
    fields.push_back(
        {std::move(key), std::move(header), std::move(unit), value, decimals, scientific});
    return *this;
  }
  /// A JSON-only field (exact counts).
  Record& add_json(std::string key, std::string unit, double value) {
    fields.push_back({std::move(key), "", std::move(unit), value, 0, false, false});
    return *this;
  }
};

/// A table of the report: key (matches Record::section), title, the header of the name column,
/// lines printed above the table and legend lines printed under it.
struct Section {
  std::string key;
  std::string title;
  std::string name_header = "name";
  bool has_variants = false;              ///< print a "variant" column
  std::vector<std::string> column_order;  ///< these field keys first, in this order
  std::vector<std::string> header;        ///< what the rows share (the weights, the data)
  std::vector<std::string> notes;         ///< legend
};

/// Facts about the run printed at the top and stored in the JSON.
struct RunInfo {
  int cores = 0;
  int threads = 0;  ///< 0 = all cores
  std::string cpu_model;
  uint64_t seed = 0;
  double total_seconds = 0;  ///< wall time of the whole report
};

/// Aligned text tables, one per section that has records (header, units, one line per record).
void print_tables(const RunInfo& info, const std::vector<Section>& sections,
                  const std::vector<Record>& records);

/// The same as JSON, written atomically to `path` (temporary file in the same folder, then
/// rename). Throws std::runtime_error on an I/O failure.
void write_json(const std::string& path, const RunInfo& info, const std::vector<Section>& sections,
                const std::vector<Record>& records);

}  // namespace cost_report
