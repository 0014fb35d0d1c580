// Reading user files with a bound, so that a device (/dev/zero), a directory
// or an absurdly large file is a clear stepc::Error instead of a read that
// never ends or exhausts memory; and writing files so that a reader only ever
// sees the old file or the complete new one.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace stepc {

// The whole of PATH, which must be a regular file of at most `maxBytes`
// bytes. `what` names the kind of file in messages ("a .sg graph") and `why`
// the reason for the limit. Throws stepc::Error naming the path.
std::string readFileBounded(const std::string &path, uint64_t maxBytes,
                            std::string_view what, std::string_view why);

// Writes the concatenation of `pieces` to a temporary beside PATH (unique to
// this process and call, so concurrent writers never share one), fsyncs it,
// renames it over PATH and fsyncs the directory: a crash or a full disk
// mid-write leaves the previous PATH intact. Throws stepc::Error naming the
// file; on error the temporary is removed and PATH is untouched.
void writeFileAtomically(const std::string &path,
                         const std::vector<std::string_view> &pieces);
inline void writeFileAtomically(const std::string &path, std::string_view bytes) {
  writeFileAtomically(path, std::vector<std::string_view>{bytes});
}

// Limits of the readers (file sizes, in bytes).
inline constexpr uint64_t kMaxGraphFileBytes = uint64_t(1) << 30; // .sg text
inline constexpr uint64_t kMaxTensorFileBytes = uint64_t(1) << 40; // .npy, safetensors
inline constexpr uint64_t kMaxOnnxFileBytes = (uint64_t(1) << 31) - 1;

} // namespace stepc
