// Reading user files with a bound, so that a device (/dev/zero), a directory
// or an absurdly large file is a clear stepc::Error instead of a read that
// never ends or exhausts memory.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace stepc {

// The whole of PATH, which must be a regular file of at most `maxBytes`
// bytes. `what` names the kind of file in messages ("a .sg graph") and `why`
// the reason for the limit. Throws stepc::Error naming the path.
std::string readFileBounded(const std::string &path, uint64_t maxBytes,
                            std::string_view what, std::string_view why);

// Limits of the readers (file sizes, in bytes).
inline constexpr uint64_t kMaxGraphFileBytes = uint64_t(1) << 30; // .sg text
inline constexpr uint64_t kMaxTensorFileBytes = uint64_t(1) << 40; // .npy, safetensors
inline constexpr uint64_t kMaxOnnxFileBytes = (uint64_t(1) << 31) - 1;

} // namespace stepc
