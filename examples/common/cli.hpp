#pragma once
// A small command-line parser shared by the example programs (header only: examples/common has
// no .cpp, so it is not a program of its own). Options are "--name value" or boolean "--name";
// a bad value or an unknown option prints the usage to stderr and exits with status 2 (this is
// an application, not the library).
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

namespace examples {

class Cli {
 public:
  Cli(std::string program, std::string summary)
      : program_(std::move(program)), summary_(std::move(summary)) {}

  /// Registers "--name VALUE" storing into *value (int, int64_t, uint64_t, double or string);
  /// the current value is the default shown in the usage.
  template <class T>
  Cli& option(const std::string& name, T* value, const std::string& help) {
    std::ostringstream def;
    def << *value;
    opts_.push_back({name, help, def.str(), true, [value](const std::string& v) {
                       std::size_t used = 0;
                       if constexpr (std::is_same_v<T, std::string>) {
                         *value = v;
                         used = v.size();
                       } else if constexpr (std::is_same_v<T, double>) {
                         *value = std::stod(v, &used);
                       } else if constexpr (std::is_same_v<T, uint64_t>) {
                         if (!v.empty() && v[0] == '-') return false;
                         *value = std::stoull(v, &used);
                       } else {
                         *value = static_cast<T>(std::stoll(v, &used));
                       }
                       return used == v.size();
                     }});
    return *this;
  }
  /// Registers a boolean "--name" that sets *value to true.
  Cli& flag(const std::string& name, bool* value, const std::string& help) {
    opts_.push_back({name, help, "", false, [value](const std::string&) {
                       *value = true;
                       return true;
                     }});
    return *this;
  }

  void parse(int argc, char** argv) const {
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      if (a == "-h" || a == "--help") usage(0);
      const Opt* o = nullptr;
      for (const Opt& c : opts_) {
        if (c.name == a) o = &c;
      }
      if (o == nullptr) {
        std::cerr << program_ << ": unknown option " << a << "\n";
        usage(2);
      }
      std::string v;
      if (o->takes_value) {
        if (i + 1 >= argc) {
          std::cerr << program_ << ": " << a << " needs a value\n";
          usage(2);
        }
        v = argv[++i];
      }
      bool ok = false;
      try {
        ok = o->set(v);
      } catch (const std::exception&) {
        ok = false;
      }
      if (!ok) {
        std::cerr << program_ << ": bad value '" << v << "' for " << a << "\n";
        usage(2);
      }
    }
  }

  [[noreturn]] void usage(int code) const {
    std::ostream& out = code == 0 ? std::cout : std::cerr;
    out << "usage: " << program_ << " [options]\n" << summary_ << "\n";
    for (const Opt& o : opts_) {
      std::string head = "  " + o.name + (o.takes_value ? " V" : "");
      head.resize(std::max<std::size_t>(head.size() + 2, 22), ' ');
      out << head << o.help << (o.takes_value ? " (default " + o.def + ")" : "") << "\n";
    }
    std::exit(code);
  }

  /// Exits with the usage when `cond` is false.
  void require(bool cond, const std::string& msg) const {
    if (!cond) {
      std::cerr << program_ << ": " << msg << "\n";
      usage(2);
    }
  }

 private:
  struct Opt {
    std::string name, help, def;
    bool takes_value;
    std::function<bool(const std::string&)> set;
  };
  std::string program_, summary_;
  std::vector<Opt> opts_;
};

/// "1.23 MiB" / "512 KiB" / "100 B".
inline std::string format_bytes(double b) {
  char buf[32];
  if (b >= double(1 << 30)) {
    std::snprintf(buf, sizeof(buf), "%.2f GiB", b / double(1 << 30));
  } else if (b >= double(1 << 20)) {
    std::snprintf(buf, sizeof(buf), "%.2f MiB", b / double(1 << 20));
  } else if (b >= 1024) {
    std::snprintf(buf, sizeof(buf), "%.1f KiB", b / 1024);
  } else {
    std::snprintf(buf, sizeof(buf), "%.0f B", b);
  }
  return buf;
}

}  // namespace examples
