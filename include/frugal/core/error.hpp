#pragma once
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

namespace frugal {

/// What kind of failure an Error reports.
enum class ErrorCode {
  kInvalidArgument,  ///< the caller passed something the op does not accept
  kUnsupported,      ///< valid input, but this combination is not implemented
  kNotCompiled,      ///< the backend needed (CUDA, MPI, NCCL, oneDNN) was not compiled in
  kCudaError,        ///< a CUDA runtime or CUDA library call failed
  kCommError,        ///< a communicator failed (MPI, NCCL, thread transport)
  kTimeout,          ///< a bounded wait ran out
  kIoError,          ///< a file could not be read or written, or its content is invalid
  kOutOfMemory,      ///< an allocation failed
};

/// Name of an error code, e.g. "InvalidArgument".
constexpr std::string_view error_code_name(ErrorCode c) {
  switch (c) {
    case ErrorCode::kInvalidArgument: return "InvalidArgument";
    case ErrorCode::kUnsupported: return "Unsupported";
    case ErrorCode::kNotCompiled: return "NotCompiled";
    case ErrorCode::kCudaError: return "CudaError";
    case ErrorCode::kCommError: return "CommError";
    case ErrorCode::kTimeout: return "Timeout";
    case ErrorCode::kIoError: return "IoError";
    case ErrorCode::kOutOfMemory: return "OutOfMemory";
  }
  return "Unknown";
}

/// The one exception type of the library. The message starts with "[op] ".
class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ErrorCode code() const noexcept { return code_; }

 private:
  ErrorCode code_;
};

namespace detail {

/// Concatenates any streamable values into one string.
template <class... Args>
std::string concat(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return os.str();
}

/// Throws Error(code, "[op] " + message parts).
template <class... Args>
[[noreturn]] void fail(ErrorCode code, std::string_view op, Args&&... args) {
  throw Error(code, concat("[", op, "] ", std::forward<Args>(args)...));
}

}  // namespace detail
}  // namespace frugal

/// Throws InvalidArgument "[op] message" when `cond` is false. Used at public entry points only.
#define FRUGAL_REQUIRE(cond, op, ...)                                                        \
  do {                                                                                       \
    if (!(cond)) ::frugal::detail::fail(::frugal::ErrorCode::kInvalidArgument, op, __VA_ARGS__); \
  } while (0)
