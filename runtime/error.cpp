#include "stepc/error.h"

#include <fmt/format.h>

namespace stepc {

SourceLoc SourceLoc::fromCpp(const std::source_location &loc) {
  std::string_view file = loc.file_name();
  // Keep messages short: the file name relative to its directory is enough to
  // find the call site.
  if (auto slash = file.rfind('/'); slash != std::string_view::npos)
    file.remove_prefix(slash + 1);
  return SourceLoc(std::string(file), static_cast<int>(loc.line()),
                   static_cast<int>(loc.column()));
}

std::string SourceLoc::str() const {
  if (!known())
    return "<unknown>";
  if (line == 0)
    return file;
  return fmt::format("{}:{}:{}", file, line, col);
}

std::string locatedMessage(const SourceLoc &loc, const std::string &message) {
  if (!loc.known())
    return fmt::format("error: {}", message);
  return fmt::format("{}: error: {}", loc.str(), message);
}

} // namespace stepc
