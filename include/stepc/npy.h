// NumPy .npy files (format 1.0/2.0/3.0, C order, little-endian): f4, f8, f2,
// i1, u1, i2, u2, i4, u4, i8, u8 and b1; bf16 tensors as their bit patterns
// in <u2 (NumPy has no bfloat16). A <u2 file reads as u16: bitsAs turns it
// into the bf16 tensor it holds where a bf16 is expected.
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
// `array` as a bf16 tensor with the same bits when it is u16 and `expected`
// is bf16 (how bf16 arrives in .npy files); otherwise `array` unchanged.
Tensor bitsAs(Tensor array, DType expected);

} // namespace stepc
