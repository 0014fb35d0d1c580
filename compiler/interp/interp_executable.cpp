// The reference interpreter behind the one Executable interface
// (include/stepc/interpreter.h), so that `--backend interp` and
// stepc.compile(backend="interp") name, check, save and load params exactly
// as the compiled backends do instead of keeping a copy of that code.
#include "stepc/interpreter.h"

#include "stepc/error.h"

#include <cstring>
#include <utility>

namespace stepc {
namespace {

constexpr int64_t kSlotAlignment = 64;

// The graph's inputs, params and outputs as slots one after another in a
// host arena. There are no kernels: a step interprets the graph.
ExecutableSpec interpreterSpec(const Graph &graph) {
  ExecutableSpec spec;
  spec.name = graph.name;
  auto place = [&](std::vector<TensorSlot> &slots, const std::string &name,
                   const TensorType &type) {
    TensorSlot slot{name, type, spec.arenaBytes};
    spec.arenaBytes += (slot.bytes() + kSlotAlignment - 1) / kSlotAlignment * kSlotAlignment;
    slots.push_back(std::move(slot));
  };
  for (ValueId id : graph.inputs())
    place(spec.inputs, graph.node(id).name, graph.type(id));
  for (ValueId id : graph.params())
    place(spec.params, graph.node(id).name, graph.type(id));
  for (const GraphOutput &out : graph.outputs)
    place(spec.outputs, out.name, graph.type(out.value));
  TensorMap initial = initialParams(graph);
  spec.initialParams = std::map<std::string, Tensor>(initial.begin(), initial.end());
  return spec;
}

class InterpExecutable final : public Executable {
public:
  InterpExecutable(Graph graph, ExecutableSpec spec, RunOptions options)
      : Executable(std::move(spec), std::move(options)), graph_(std::move(graph)),
        arena_(static_cast<size_t>(spec_.arenaBytes)) {
    writeInitialParams();
  }

private:
  Graph graph_;
  std::vector<std::byte> arena_;

  void runStep(const std::map<std::string, Tensor, std::less<>> &inputs,
               std::map<std::string, Tensor> &outputs) override {
    TensorMap params;
    for (const TensorSlot &slot : spec_.params) {
      Tensor value(slot.type);
      readSlot(slot, value.bytes());
      params.emplace(slot.name, std::move(value));
    }
    InterpretOptions interpret;
    if (options_.communicator)
      interpret.communicator = comm_.get();
    // interpretStep changes `params` only when the whole step succeeded.
    TensorMap results = interpretStep(graph_, inputs, params, interpret);
    for (const TensorSlot &slot : spec_.params)
      writeSlot(slot, params.at(slot.name).bytes());
    for (auto &[name, value] : results)
      outputs.at(name) = std::move(value);
  }

  void readSlot(const TensorSlot &slot, std::byte *to) const override {
    if (slot.bytes() > 0)
      std::memcpy(to, arena_.data() + slot.offset, static_cast<size_t>(slot.bytes()));
  }

  void writeSlot(const TensorSlot &slot, const std::byte *from) override {
    if (slot.bytes() > 0)
      std::memcpy(arena_.data() + slot.offset, from, static_cast<size_t>(slot.bytes()));
  }
};

} // namespace

std::unique_ptr<Executable> makeInterpExecutable(const Graph &graph, const RunOptions &options) {
  verify(graph);
  return std::make_unique<InterpExecutable>(graph, interpreterSpec(graph), options);
}

} // namespace stepc
