#include "slots.h"

#include "stepc/error.h"
#include "stepc/half.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <cstring>

namespace stepc {
namespace {

// Element i of a float slot (f32, f64, f16, bf16) at `data`, as a double.
double floatAt(DType dtype, const std::byte *data, int64_t i) {
  auto read = [&](auto value) { // slots may be unaligned
    std::memcpy(&value, data + i * sizeof(value), sizeof(value));
    return value;
  };
  if (isHalf(dtype))
    return halfBitsToFloat(read(uint16_t{}), dtype);
  return dtype == DType::F32 ? read(float{}) : read(double{});
}

// Index of the first NaN/Inf among n values of a float dtype at `data`, or -1.
int64_t firstNonFinite(DType dtype, const std::byte *data, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(floatAt(dtype, data, i)))
      return i;
  return -1;
}

std::string_view nonFiniteName(double value) {
  if (std::isnan(value))
    return "NaN";
  return value > 0 ? "Inf" : "-Inf";
}

// "[0,5]": the row-major index of a flat element.
std::string indexString(const Shape &shape, int64_t flat) {
  std::vector<int64_t> index(shape.size());
  for (size_t d = shape.size(); d-- > 0;) {
    index[d] = shape[d] == 0 ? 0 : flat % shape[d];
    flat = shape[d] == 0 ? 0 : flat / shape[d];
  }
  return shapeString(index);
}

} // namespace

const TensorSlot *findSlot(const std::vector<TensorSlot> &slots, std::string_view name) {
  for (const TensorSlot &slot : slots)
    if (slot.name == name)
      return &slot;
  return nullptr;
}

std::string slotNames(const std::vector<TensorSlot> &slots) {
  std::vector<std::string_view> names;
  for (const TensorSlot &slot : slots)
    names.push_back(slot.name);
  return fmt::format("{}", fmt::join(names, ", "));
}

const TensorSlot &findParamSlot(const std::vector<TensorSlot> &params, const std::string &name) {
  if (const TensorSlot *slot = findSlot(params, name))
    return *slot;
  throw Error(params.empty()
                  ? fmt::format("unknown param '{}'; the executable has no params", name)
                  : fmt::format("unknown param '{}'; the executable's params are: {}", name,
                                slotNames(params)));
}

void checkStepInputs(const std::vector<TensorSlot> &slots,
                     const std::map<std::string, Tensor, std::less<>> &inputs) {
  for (const auto &[name, value] : inputs)
    if (!findSlot(slots, name))
      throw Error(slots.empty()
                      ? fmt::format("unknown input '{}'; the executable takes no inputs", name)
                      : fmt::format("unknown input '{}'; the executable's inputs are: {}", name,
                                    slotNames(slots)));
  for (const TensorSlot &slot : slots) {
    auto given = inputs.find(slot.name);
    if (given == inputs.end())
      throw Error(fmt::format("missing input '{}' ({})", slot.name, typeString(slot.type)));
    if (given->second.type() != slot.type)
      throw Error(fmt::format("input '{}': expected {}, got {}", slot.name,
                              typeString(slot.type), typeString(given->second.type())));
  }
}

void checkCheckpoint(const std::string &path, const ExecutableSpec &spec,
                     const std::map<std::string, Tensor> &tensors) {
  std::vector<std::string> differences;
  for (const TensorSlot &slot : spec.params) {
    auto found = tensors.find(slot.name);
    if (found == tensors.end())
      differences.push_back(
          fmt::format("missing '{}' ({})", slot.name, typeString(slot.type)));
    else if (found->second.type() != slot.type)
      differences.push_back(fmt::format("'{}': expected {}, found {}", slot.name,
                                        typeString(slot.type),
                                        typeString(found->second.type())));
  }
  for (const auto &[name, value] : tensors)
    if (!findSlot(spec.params, name))
      differences.push_back(
          fmt::format("unexpected '{}' ({})", name, typeString(value.type())));
  if (!differences.empty())
    throw Error(fmt::format("{}: checkpoint does not match executable '{}' ({} difference{}):"
                            "\n  {}",
                            path, spec.name, differences.size(),
                            differences.size() == 1 ? "" : "s",
                            fmt::join(differences, "\n  ")));
}

void checkFinite(const KernelSpec &kernel, const TensorSlot &slot, const std::byte *data,
                 int64_t step) {
  if (!isFloat(slot.type.dtype))
    return;
  int64_t n = slot.type.numel();
  int64_t bad = firstNonFinite(slot.type.dtype, data, n);
  if (bad < 0)
    return;
  double value = floatAt(slot.type.dtype, data, bad);
  std::string ops;
  for (const std::string &line : kernel.provenance)
    ops += fmt::format("\n  {}", line);
  if (ops.empty())
    ops = "\n  (not recorded)";
  throw Error(fmt::format("check-numerics: kernel {} (step {}) produced {} in output {} {} "
                          "at element {} (index {}); its ops:{}\nparams are left as they "
                          "were before step {}",
                          kernel.name, step, nonFiniteName(value), slot.name,
                          typeString(slot.type), bad, indexString(slot.type.shape, bad), ops,
                          step));
}

std::string indexOutOfRange(const IndexCheck &check, int64_t value, int64_t element) {
  std::string valid = check.bound > 0
                          ? fmt::format("valid indices are 0 to {}", check.bound - 1)
                          : std::string("no index is valid");
  return fmt::format("index {} (element {} of the indices {}) is out of range{}{}; {}", value,
                     element, check.indices, check.range.empty() ? "" : " for ", check.range,
                     valid);
}

void checkFaultRecordSpec(const ExecutableSpec &spec) {
  std::string name = spec.name.empty() ? "<unnamed>" : spec.name;
  int64_t bytes = kFaultRecordWords * static_cast<int64_t>(sizeof(int64_t));
  if (spec.faultOffset == -1 && spec.indexChecks.empty())
    return;
  if (spec.faultOffset < 0 || spec.faultOffset % 8 != 0 || spec.faultOffset > spec.arenaBytes ||
      bytes > spec.arenaBytes - spec.faultOffset)
    throw Error(fmt::format("executable '{}': its fault record ({} bytes at offset {}) is not "
                            "an 8-byte aligned place in the arena of {} bytes",
                            name, bytes, spec.faultOffset, spec.arenaBytes));
  for (const IndexCheck &check : spec.indexChecks)
    if (std::none_of(spec.kernels.begin(), spec.kernels.end(),
                     [&](const KernelSpec &k) { return k.name == check.kernel; }))
      throw Error(fmt::format("executable '{}': index check of {} names kernel '{}', which "
                              "it does not have",
                              name, check.op, check.kernel));
}

bool writesParams(const KernelSpec &kernel, const std::vector<TensorSlot> &params) {
  for (const TensorSlot &out : kernel.outputs)
    for (const TensorSlot &param : params)
      if (out.offset < param.offset + param.bytes() && param.offset < out.offset + out.bytes())
        return true;
  return false;
}

size_t firstParamWriter(const ExecutableSpec &spec) {
  for (size_t k = 0; k < spec.kernels.size(); ++k)
    if (writesParams(spec.kernels[k], spec.params))
      return k;
  return spec.kernels.size();
}

void throwIndexFault(const ExecutableSpec &spec, const int64_t *record, int64_t step,
                     bool paramsKept) {
  int64_t which = record[1];
  if (which < 0 || which >= static_cast<int64_t>(spec.indexChecks.size()))
    throw Error(fmt::format("executable '{}', step {}: a kernel reported a bad index for check "
                            "{}, but the executable has {} checks; its kernels and its spec "
                            "do not match",
                            spec.name, step, which, spec.indexChecks.size()));
  const IndexCheck &check = spec.indexChecks[static_cast<size_t>(which)];
  std::string message = fmt::format("{}: {}", check.op, indexOutOfRange(check, record[3], record[2]));
  throw Error(fmt::format(
      "{}\n  in kernel {}, step {}; {}",
      check.location.empty() ? fmt::format("error: {}", message)
                             : fmt::format("{}: error: {}", check.location, message),
      check.kernel, step,
      paramsKept ? fmt::format("params are left as they were before step {}", step)
                 : std::string("params may be partly updated (kernels up to this one write "
                               "params; with checkNumerics on, a failed step is rolled back)")));
}

double micros(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double, std::micro>(d).count();
}

} // namespace stepc
