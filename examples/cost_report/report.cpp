// Printers of the cost report: an aligned terminal table and a JSON file written atomically.
#include "report.hpp"

#include "frugal/core/io.hpp"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>

namespace cost_report {
namespace {

struct Column {
  std::string key, header, unit;
  int decimals;
  bool scientific;
};

/// The union of the records' fields, in order of first appearance.
std::vector<Column> columns_of(const std::vector<Record>& records) {
  std::vector<Column> cols;
  for (const Record& r : records) {
    for (const Field& f : r.fields) {
      if (!f.in_table) continue;
      const bool seen =
          std::any_of(cols.begin(), cols.end(), [&](const Column& c) { return c.key == f.key; });
      if (!seen) cols.push_back({f.key, f.header, f.unit, f.decimals, f.scientific});
    }
  }
  return cols;
}

std::string format_value(double v, int decimals, bool scientific) {
  if (!std::isfinite(v)) return std::isnan(v) ? "nan" : (v > 0 ? "inf" : "-inf");
  char buf[64];
  if (scientific) {
    if (v == 0) return "0";
    std::snprintf(buf, sizeof(buf), "%.2e", v);
  } else {
    std::snprintf(buf, sizeof(buf), "%.*f", decimals, v);
  }
  return buf;
}

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", c);
          out += buf;
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

/// A JSON number with full double precision; NaN and infinities (not JSON) become null.
std::string json_number(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.17g", v);
  return buf;
}

/// One section's table: name (and variant) columns, then the union of its records' fields.
void print_section(std::ostringstream& os, const Section& sec, const std::vector<Record>& records) {
  std::vector<Column> cols = columns_of(records);
  auto rank = [&](const Column& c) {
    const auto it = std::find(sec.column_order.begin(), sec.column_order.end(), c.key);
    return it - sec.column_order.begin();  // unlisted: after every listed key
  };
  std::stable_sort(cols.begin(), cols.end(),
                   [&](const Column& a, const Column& b) { return rank(a) < rank(b); });
  // Cells: name column (and variant), then one per field; rows 0 and 1 are the header and units.
  std::vector<std::vector<std::string>> cells;
  std::vector<std::string> head = {sec.name_header}, units = {""};
  if (sec.has_variants) {
    head.push_back("variant");
    units.push_back("");
  }
  const std::size_t lead = head.size();  // left-aligned text columns
  for (const Column& c : cols) {
    head.push_back(c.header);
    units.push_back(c.unit.empty() ? "" : "(" + c.unit + ")");
  }
  cells.push_back(head);
  cells.push_back(units);
  for (const Record& r : records) {
    std::vector<std::string> line = {r.name};
    if (sec.has_variants) line.push_back(r.variant);
    for (const Column& c : cols) {
      auto it = std::find_if(r.fields.begin(), r.fields.end(),
                             [&](const Field& f) { return f.key == c.key; });
      line.push_back(it == r.fields.end() ? "-"
                                          : format_value(it->value, c.decimals, c.scientific));
    }
    cells.push_back(line);
  }
  std::vector<std::size_t> width(head.size(), 0);
  for (const auto& line : cells) {
    for (std::size_t i = 0; i < line.size(); ++i) width[i] = std::max(width[i], line[i].size());
  }

  os << "== " << sec.title << " ==\n";
  for (const std::string& h : sec.header) os << h << "\n";
  os << "\n";
  std::size_t total = 0;
  for (std::size_t w : width) total += w + 2;
  for (std::size_t row = 0; row < cells.size(); ++row) {
    for (std::size_t i = 0; i < cells[row].size(); ++i) {
      const std::string& s = cells[row][i];
      const std::string pad(width[i] - s.size(), ' ');
      const std::string sep = i == 0 ? "" : "  ";
      os << sep << (i < lead ? s + pad : pad + s);  // names left, numbers right
    }
    os << "\n";
    if (row == 1) os << std::string(total - 2, '-') << "\n";
  }
  os << "\n";
  for (const Record& r : records) {
    os << "  " << r.name << (r.variant.empty() ? "" : " [" + r.variant + "]") << ": "
       << r.description << "\n";
  }
  if (!sec.notes.empty()) os << "\n";
  for (const std::string& n : sec.notes) os << "  " << n << "\n";
}

std::vector<Record> records_of(const Section& sec, const std::vector<Record>& records) {
  std::vector<Record> out;
  for (const Record& r : records) {
    if (r.section == sec.key) out.push_back(r);
  }
  return out;
}

}  // namespace

void print_tables(const RunInfo& info, const std::vector<Section>& sections,
                  const std::vector<Record>& records) {
  std::ostringstream os;
  os << "frugal cost_report: " << info.cores << " cores (" << info.cpu_model << "), "
     << (info.threads == 0 ? std::string("all cores") : std::to_string(info.threads) + " threads")
     << ", seed " << info.seed << "\n\n";
  for (const Section& sec : sections) {
    const std::vector<Record> mine = records_of(sec, records);
    if (mine.empty()) continue;
    print_section(os, sec, mine);
    os << "\n";
  }
  os << "total time " << format_value(info.total_seconds, 1, false) << " s\n";
  std::cout << os.str() << std::flush;
}

void write_json(const std::string& path, const RunInfo& info, const std::vector<Section>& sections,
                const std::vector<Record>& records) {
  auto string_list = [](const std::vector<std::string>& v) {
    std::string s = "[";
    for (std::size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + json_string(v[i]);
    return s + "]";
  };
  std::ostringstream os;
  os << "{\n  \"program\": \"cost_report\",\n";
  os << "  \"machine\": {\"cores\": " << info.cores
     << ", \"cpu_model\": " << json_string(info.cpu_model) << "},\n";
  os << "  \"threads\": " << info.threads << ",\n  \"seed\": " << info.seed
     << ",\n  \"total_seconds\": " << json_number(info.total_seconds) << ",\n";
  os << "  \"sections\": [\n";
  bool first_section = true;
  for (const Section& sec : sections) {
    const std::vector<Record> mine = records_of(sec, records);
    if (mine.empty()) continue;
    os << (first_section ? "" : ",\n") << "    {\"key\": " << json_string(sec.key)
       << ", \"title\": " << json_string(sec.title)
       << ",\n     \"header\": " << string_list(sec.header)
       << ",\n     \"notes\": " << string_list(sec.notes) << ",\n     \"units\": {";
    first_section = false;
    // Units of every field, JSON-only ones included.
    std::vector<std::string> seen;
    for (const Record& r : mine) {
      for (const Field& f : r.fields) {
        if (std::find(seen.begin(), seen.end(), f.key) != seen.end()) continue;
        os << (seen.empty() ? "" : ", ") << json_string(f.key) << ": " << json_string(f.unit);
        seen.push_back(f.key);
      }
    }
    os << "},\n     \"rows\": [\n";
    for (std::size_t r = 0; r < mine.size(); ++r) {
      os << "       {\"name\": " << json_string(mine[r].name);
      if (sec.has_variants) os << ", \"variant\": " << json_string(mine[r].variant);
      os << ", \"description\": " << json_string(mine[r].description);
      for (const Field& f : mine[r].fields) {
        os << ", " << json_string(f.key) << ": " << json_number(f.value);
      }
      os << "}" << (r + 1 < mine.size() ? "," : "") << "\n";
    }
    os << "     ]}";
  }
  os << "\n  ]\n}\n";

  // Atomic replace: a reader sees the old file or the whole new one, never a partial write.
  frugal::write_file_atomic(path, os.str(), "cost_report --json");
}

}  // namespace cost_report
