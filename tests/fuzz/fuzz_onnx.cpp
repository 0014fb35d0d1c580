// The ONNX importer: any bytes either import as a model (whose graph
// verifies and prints) or throw stepc::Error. The same bytes also go through
// the TensorProto reader that the conformance runner uses.
#include "stepc/error.h"
#include "stepc/onnx.h"
#include "stepc/text.h"

#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  std::string_view bytes(reinterpret_cast<const char *>(data), size);
  try {
    stepc::OnnxModel model = stepc::importOnnxBytes(bytes, "fuzz.onnx");
    stepc::verify(model.graph);
    stepc::printGraph(model.graph);
  } catch (const stepc::Error &) {
  }
  try {
    stepc::parseOnnxTensor(bytes, "fuzz.pb");
  } catch (const stepc::Error &) {
  }
  return 0;
}
