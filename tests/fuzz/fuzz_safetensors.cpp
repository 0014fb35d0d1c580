// The safetensors reader: any bytes either give tensors that match the
// header, or throw stepc::Error. The reader takes a path, so each input is
// written to an in-memory file (memfd) and read through /proc/self/fd.
#include "stepc/error.h"
#include "stepc/executable.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>

namespace {

struct MemoryFile {
  int fd = ::memfd_create("fuzz.safetensors", 0);
  std::string path = "/proc/self/fd/" + std::to_string(fd);
};

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const MemoryFile file;
  if (file.fd < 0 || ::ftruncate(file.fd, 0) != 0 ||
      ::pwrite(file.fd, data, size, 0) != static_cast<ssize_t>(size)) {
    std::perror("fuzz_safetensors: writing the memfd");
    std::abort();
  }
  try {
    std::map<std::string, std::string> metadata;
    std::map<std::string, stepc::Tensor> tensors = stepc::readSafetensors(file.path, &metadata);
    size_t bytes = 0;
    for (const auto &[name, tensor] : tensors)
      bytes += tensor.nbytes();
    if (bytes > size) {
      std::fprintf(stderr, "fuzz_safetensors: %zu tensor bytes from a %zu-byte file\n", bytes,
                   size);
      std::abort();
    }
  } catch (const stepc::Error &) {
  }
  return 0;
}
