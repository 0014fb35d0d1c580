// CpuExecutable (include/stepc/executable.h): the kernels are host machine
// code, called on slices of their parallel extent by a thread pool, on one
// 64-byte-aligned arena.
#include "stepc/executable.h"

#include "slots.h"
#include "thread_pool.h"

#include "stepc/error.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <utility>

namespace stepc {
namespace {

constexpr size_t kArenaAlignment = 64;

// memcpy, except that empty tensors may have null data pointers.
void copyBytes(std::byte *to, const std::byte *from, int64_t bytes) {
  if (bytes > 0)
    std::memcpy(to, from, static_cast<size_t>(bytes));
}

// What only the CPU runs: kernels are functions, collectives go through the
// communicator, and a thread count.
void checkCpuSpec(const ExecutableSpec &spec, const RunOptions &options) {
  std::string name = spec.name.empty() ? "<unnamed>" : spec.name;
  if (options.threads < 0)
    throw Error(fmt::format("executable '{}': thread count must be >= 0 (0: one per core), "
                            "got {}",
                            name, options.threads));
  for (size_t index = 0; index < spec.kernels.size(); ++index) {
    const KernelSpec &kernel = spec.kernels[index];
    if (kernel.collective) {
      if (kernel.outputs.size() != 1 || kernel.outputs[0].type != kernel.collective->from.type)
        throw Error(fmt::format("executable '{}': collective step '{}' needs one output of "
                                "the type of what it reduces ({})",
                                name, kernel.name, typeString(kernel.collective->from.type)));
    } else if (!kernel.fn) {
      throw Error(fmt::format("executable '{}': kernel '{}' has no function", name,
                              kernel.name));
    }
    for (size_t w : kernel.waitFor)
      if (w >= index || !spec.kernels[w].collective)
        throw Error(fmt::format("executable '{}': kernel '{}' waits for step {}, which is no "
                                "earlier collective step",
                                name, kernel.name, w));
    // Extent 0: the kernel's outputs are empty, so there is nothing to run.
    if (kernel.parallelExtent < 0)
      throw Error(fmt::format("executable '{}': kernel '{}' has parallel extent {}; it must "
                              "be at least 0",
                              name, kernel.name, kernel.parallelExtent));
  }
}

} // namespace

CpuExecutable::CpuExecutable(ExecutableSpec spec, RunOptions options)
    : CpuExecutable(std::make_shared<const ExecutableSpec>(std::move(spec)), std::move(options)) {}

CpuExecutable::CpuExecutable(std::shared_ptr<const ExecutableSpec> spec, RunOptions options)
    : Executable(std::move(spec), std::move(options)) {
  checkCpuSpec(spec_, options_);
  firstParamWriter_ = firstParamWriter(spec_);

  // calloc, not aligned_alloc + memset: a large arena comes from fresh
  // (mmap'ed) pages that the kernel zeroes on first touch, so creating an
  // executable (a JIT cache hit) does not write hundreds of megabytes up
  // front. Aligned by hand inside the allocation.
  size_t bytes = static_cast<size_t>(std::max<int64_t>(spec_.arenaBytes, 1));
  arenaAllocation_ = std::calloc(bytes + kArenaAlignment, 1);
  if (!arenaAllocation_)
    throw Error(fmt::format("executable '{}': cannot allocate its arena of {} bytes",
                            spec_.name, spec_.arenaBytes));
  auto address = reinterpret_cast<uintptr_t>(arenaAllocation_);
  arena_ = static_cast<std::byte *>(arenaAllocation_) +
           (kArenaAlignment - address % kArenaAlignment) % kArenaAlignment;
  descriptor_ = {arena_, arena_, 0, spec_.arenaBytes, 1};

  try {
    if (options_.checkNumerics) {
      int64_t total = 0;
      for (const TensorSlot &slot : spec_.params)
        total += slot.bytes();
      paramSnapshot_.resize(static_cast<size_t>(total));
    }
    int threads = options_.threads > 0
                      ? options_.threads
                      : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    bool parallel = std::any_of(spec_.kernels.begin(), spec_.kernels.end(),
                                [](const KernelSpec &k) { return k.parallelExtent > 1; });
    if (threads > 1 && parallel)
      pool_ = std::make_unique<ThreadPool>(threads);
    inFlight_.assign(spec_.kernels.size(), -1);
    writeInitialParams();
  } catch (...) {
    pool_.reset();
    std::free(arenaAllocation_);
    throw;
  }
}

CpuExecutable::~CpuExecutable() {
  pool_.reset(); // join the workers before the arena they might touch goes
  std::free(arenaAllocation_);
}

void CpuExecutable::readSlot(const TensorSlot &slot, std::byte *to) const {
  copyBytes(to, arena_ + slot.offset, slot.bytes());
}

void CpuExecutable::writeSlot(const TensorSlot &slot, const std::byte *from) {
  copyBytes(arena_ + slot.offset, from, slot.bytes());
}

void CpuExecutable::checkOutputs(const KernelSpec &kernel) const {
  for (const TensorSlot &slot : kernel.outputs)
    checkFinite(kernel, slot, arena_ + slot.offset, steps_);
}

void CpuExecutable::checkFault(size_t kernelIndex) {
  int64_t *record = reinterpret_cast<int64_t *>(arena_ + spec_.faultOffset);
  if (record[0] == 0)
    return;
  int64_t copy[kFaultRecordWords];
  std::memcpy(copy, record, sizeof copy);
  std::memset(record, 0, sizeof copy); // ready for the next step
  throwIndexFault(spec_, copy, steps_, options_.checkNumerics || kernelIndex < firstParamWriter_);
}

void CpuExecutable::runCollective(size_t index, const KernelSpec &kernel) {
  const KernelSpec::Collective &c = *kernel.collective;
  const TensorSlot &to = kernel.outputs[0];
  inFlight_[index] = comm_->startAllReduce(arena_ + c.from.offset, arena_ + to.offset,
                                           to.type.numel(), to.type.dtype, c.op);
  ++collectiveStats_.calls;
  collectiveStats_.bytes += to.bytes();
}

void CpuExecutable::waitFor(size_t index) {
  if (inFlight_[index] < 0)
    return;
  if (comm_->finished(inFlight_[index]))
    collectiveStats_.hiddenBytes += spec_.kernels[index].outputs[0].bytes();
  auto start = std::chrono::steady_clock::now();
  comm_->wait(std::exchange(inFlight_[index], -1));
  collectiveStats_.waitMicros += micros(std::chrono::steady_clock::now() - start);
}

void CpuExecutable::runKernels() {
  for (size_t index = 0; index < spec_.kernels.size(); ++index) {
    const KernelSpec &kernel = spec_.kernels[index];
    for (size_t w : kernel.waitFor)
      waitFor(w);
    if (options_.beforeKernel && !kernel.collective)
      options_.beforeKernel(index, kernel, arena_);
    auto start = std::chrono::steady_clock::now();
    try {
      if (kernel.collective)
        runCollective(index, kernel);
      // Extent 0: its outputs have no elements.
      else if (kernel.parallelExtent > 1 && pool_)
        pool_->parallelFor(kernel.parallelExtent, [&](int64_t begin, int64_t end) {
          kernel.fn(&descriptor_, begin, end);
        });
      else if (kernel.parallelExtent > 0)
        kernel.fn(&descriptor_, 0, kernel.parallelExtent);
      comm_->progress();
    } catch (const std::exception &e) {
      throw Error(fmt::format(
          "kernel {} (step {}) failed: {}; {}", kernel.name, steps_, e.what(),
          options_.checkNumerics
              ? fmt::format("params are left as they were before step {}", steps_)
              : std::string("params may be partly updated (with checkNumerics on, a "
                            "failed step is rolled back)")));
    }
    if (options_.profile) {
      auto end = std::chrono::steady_clock::now();
      timings_.push_back({kernel.name, steps_, micros(start - created_), micros(end - start)});
    }
    if (spec_.faultOffset >= 0)
      checkFault(index);
    if (options_.afterKernel && !kernel.collective)
      options_.afterKernel(index, kernel, arena_);
    if (options_.checkNumerics && !kernel.collective)
      checkOutputs(kernel);
  }
  // Results a graph output or param update names are read after the kernels.
  for (size_t index = 0; index < spec_.kernels.size(); ++index)
    waitFor(index);
}

void CpuExecutable::runStep(const std::map<std::string, Tensor, std::less<>> &inputs,
                            std::map<std::string, Tensor> &outputs) {
  // Everything that allocates happens before the first write to the arena.
  size_t timingsBefore = timings_.size();
  if (options_.profile && timings_.capacity() < timingsBefore + spec_.kernels.size())
    timings_.reserve(std::max(2 * timings_.capacity(), timingsBefore + spec_.kernels.size()));

  if (options_.checkNumerics) {
    std::byte *to = paramSnapshot_.data();
    for (const TensorSlot &slot : spec_.params) {
      copyBytes(to, arena_ + slot.offset, slot.bytes());
      to += slot.bytes();
    }
  }
  for (const TensorSlot &slot : spec_.inputs)
    copyBytes(arena_ + slot.offset, inputs.find(slot.name)->second.bytes(), slot.bytes());

  try {
    runKernels();
  } catch (...) {
    for (size_t index = 0; index < spec_.kernels.size(); ++index)
      waitFor(index); // no collective may still write into the arena
    timings_.erase(timings_.begin() + static_cast<ptrdiff_t>(timingsBefore), timings_.end());
    if (options_.checkNumerics) {
      const std::byte *from = paramSnapshot_.data();
      for (const TensorSlot &slot : spec_.params) {
        copyBytes(arena_ + slot.offset, from, slot.bytes());
        from += slot.bytes();
      }
    }
    throw;
  }

  for (const auto &copy : spec_.updateCopies)
    if (copy.bytes > 0)
      std::memmove(arena_ + copy.to, arena_ + copy.from, static_cast<size_t>(copy.bytes));
  for (const TensorSlot &slot : spec_.outputs)
    copyBytes(outputs.at(slot.name).bytes(), arena_ + slot.offset, slot.bytes());
}

} // namespace stepc
