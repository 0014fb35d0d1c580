// NumPy .npy files (format 1.0/2.0/3.0, C order, little-endian): f4, f8, f2,
// i4, i8 and b1; bf16 tensors as their bit patterns in <u2 (NumPy has no
// bfloat16), and a <u2 file reads as bf16.
#pragma once

#include "stepc/tensor.h"

#include <string>

namespace stepc {

// Throws stepc::Error naming the file and what is wrong with it.
Tensor readNpy(const std::string &path);
Tensor parseNpy(std::string_view bytes, const std::string &what = "<npy>");
// Writes atomically (temporary file, then rename).
void writeNpy(const std::string &path, const Tensor &tensor);
std::string serializeNpy(const Tensor &tensor);

} // namespace stepc
