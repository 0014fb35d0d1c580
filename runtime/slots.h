// Slot lookups and the checks whose messages the CPU Executable and the
// CudaExecutable share (runtime only): one place, so both backends report
// the same mistake in the same words.
#pragma once

#include "stepc/executable.h"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace stepc {

// The slot named `name`, or nullptr.
const TensorSlot *findSlot(const std::vector<TensorSlot> &slots, std::string_view name);

// "a, b, c": the slots' names, for error messages.
std::string slotNames(const std::vector<TensorSlot> &slots);

// The param slot named `name`; throws stepc::Error listing the params.
const TensorSlot &findParamSlot(const std::vector<TensorSlot> &params, const std::string &name);

// Throws stepc::Error for an unknown, missing or mistyped input (unknown
// names first: for a misspelt input this lists the right spelling).
void checkStepInputs(const std::vector<TensorSlot> &slots,
                     const std::map<std::string, Tensor, std::less<>> &inputs);

// Throws stepc::Error if `tensors` (read from the checkpoint at `path`) do
// not hold exactly the params of `spec`, with their types.
void checkCheckpoint(const std::string &path, const ExecutableSpec &spec,
                     const std::map<std::string, Tensor> &tensors);

// With checkNumerics: throws stepc::Error naming the first NaN/Inf in
// output `slot` of `kernel`, whose values are at `data` (host memory).
// Non-float slots pass.
void checkFinite(const KernelSpec &kernel, const TensorSlot &slot, const std::byte *data,
                 int64_t step);

// Throws stepc::Error if the fault record or an index check of `spec` is
// malformed (outside the arena, misaligned, a check with no kernel).
void checkFaultRecordSpec(const ExecutableSpec &spec);

// Whether `kernel` writes bytes of a param (an in-place update).
bool writesParams(const KernelSpec &kernel, const std::vector<TensorSlot> &params);
// The index of the first kernel that writes params, or kernels.size().
size_t firstParamWriter(const ExecutableSpec &spec);

// Throws the stepc::Error a claimed fault record (`record`, the
// kFaultRecordWords values read from the arena) stands for. `paramsKept`:
// whether params are as they were before `step`.
[[noreturn]] void throwIndexFault(const ExecutableSpec &spec, const int64_t *record,
                                  int64_t step, bool paramsKept);

double micros(std::chrono::steady_clock::duration d);

} // namespace stepc
