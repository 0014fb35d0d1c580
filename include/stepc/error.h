// User-facing errors: every message names the thing and what was expected.
#pragma once

#include <source_location>
#include <stdexcept>
#include <string>

namespace stepc {

// Where a value came from: a line of a .sg file, or a C++ call site.
struct SourceLoc {
  std::string file;
  int line = 0;
  int col = 0;
  // For generated nodes, what generated them ("gradient of matmul").
  std::string origin;

  SourceLoc() = default;
  SourceLoc(std::string file, int line, int col)
      : file(std::move(file)), line(line), col(col) {}
  static SourceLoc fromCpp(const std::source_location &loc);

  bool known() const { return !file.empty(); }
  // "mlp.sg:14:9" or "<unknown>"
  std::string str() const;
};

// Thrown for anything a user can fix: bad graphs, bad inputs, missing files.
class Error : public std::runtime_error {
public:
  explicit Error(const std::string &message) : std::runtime_error(message) {}
};

// Formats "LOC: error: MESSAGE" (LOC omitted when unknown).
std::string locatedMessage(const SourceLoc &loc, const std::string &message);

} // namespace stepc
