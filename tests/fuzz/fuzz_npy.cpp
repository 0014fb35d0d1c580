// The .npy reader: any bytes either give a tensor, which serializes and reads
// back to the same tensor, or throw stepc::Error.
#include "stepc/error.h"
#include "stepc/npy.h"

#include <cstdio>
#include <cstdlib>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  stepc::Tensor tensor;
  try {
    tensor = stepc::parseNpy(std::string_view(reinterpret_cast<const char *>(data), size),
                             "fuzz.npy");
  } catch (const stepc::Error &) {
    return 0;
  }
  stepc::Tensor again = stepc::parseNpy(stepc::serializeNpy(tensor), "written.npy");
  // Compared as bytes: NaN payloads must survive too.
  if (!(again.type() == tensor.type()) ||
      std::string_view(reinterpret_cast<const char *>(again.bytes()), again.nbytes()) !=
          std::string_view(reinterpret_cast<const char *>(tensor.bytes()), tensor.nbytes())) {
    std::fprintf(stderr, "fuzz_npy: writing and reading back changed the tensor\n");
    std::abort();
  }
  return 0;
}
