// Files that are either the old version or the complete new one (runtime only).
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace stepc {

// Writes the concatenation of `pieces` to PATH.tmp, fsyncs it, renames it
// over PATH and fsyncs the directory, so a crash or a full disk mid-write
// leaves the previous PATH intact. Throws stepc::Error naming the file; on
// error the temporary file is removed and PATH is untouched.
void writeFileAtomically(const std::string &path,
                         const std::vector<std::string_view> &pieces);

} // namespace stepc
