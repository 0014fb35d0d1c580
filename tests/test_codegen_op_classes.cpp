// The op classes of ops.def against what the stages do with them: fusion,
// codegen and the memory plan derive their treatment of an op from its class
// and flags, so the table must say what the emitted code then does.
#include "codegen_harness.h"
#include "sg_corpus.h"

#include "lowering.h"

#include "stepc/text.h"

#include <gtest/gtest.h>

#include <regex>
#include <set>
#include <string>

namespace stepc {
namespace {

TEST(OpClasses, FlagsAgreeWithClasses) {
  std::set<std::string> scatterForm;
  for (const OpInfo &info : allOps()) {
    SCOPED_TRACE(std::string(info.name));
    if (info.opClass == OpClass::Source || info.opClass == OpClass::Constant)
      EXPECT_EQ(info.arity, 0);
    else
      EXPECT_NE(info.arity, 0);
    if (info.opClass == OpClass::Scatter)
      EXPECT_TRUE(info.is(kScatterForm));
    if (info.is(kScatterForm)) {
      scatterForm.insert(std::string(info.name));
      EXPECT_TRUE(info.opClass == OpClass::Scatter || info.opClass == OpClass::Contraction ||
                  info.opClass == OpClass::Window);
    }
  }
  // The gradient ops that add into their output (ops.def, "Gradient ops").
  EXPECT_EQ(scatterForm, (std::set<std::string>{"scatter_add", "conv2d_grad_input",
                                                "conv2d_grad_weight", "max_pool2d_grad",
                                                "avg_pool2d_grad"}));
  // Dropout's mask hashes (seed, flat index): elementwise in its operands
  // and its place, but a class of its own (moving it across an index map
  // would change its values).
  EXPECT_EQ(opInfo(OpKind::Dropout).opClass, OpClass::Random);
}

// Each op of the corpus as a kernel of its own (as --no-fusion compiles it),
// lowered for the CPU and the GPU, with value v at arena offset 4096 (v + 1).
struct OneOpKernel {
  ValueId value;
  codegen::KernelSource cpu, gpu;
};

std::vector<OneOpKernel> oneOpKernels(const Graph &graph) {
  FusionOptions unfused;
  unfused.enabled = false;
  FusionPlan plan = planFusion(graph, unfused);
  std::function<int64_t(ValueId)> offset = [](ValueId v) { return 4096 * int64_t(v + 1); };
  std::vector<bool> usedOutside(graph.size(), true);
  int64_t scratch = 4096 * int64_t(graph.size() + 1);
  std::vector<OneOpKernel> out;
  for (const FusionGroup &group : plan.groups) {
    ValueId v = group.nodes.front();
    if (group.nodes.size() != 1 || opInfo(graph.node(v).op).opClass == OpClass::Collective)
      continue;
    FusionGroup cpu = group, gpu = group;
    cpu.kernel = planKernel(graph, group, usedOutside, codegen::kernelTarget(false));
    gpu.kernel = planKernel(graph, group, usedOutside, codegen::kernelTarget(true));
    out.push_back({v, codegen::lowerGroup(graph, cpu, offset, usedOutside, scratch, false, {0, 0}),
                   codegen::lowerGroup(graph, gpu, offset, usedOutside, scratch, true, {0, 0})});
  }
  return out;
}

// Whether the kernel loads (scalars or vectors) from the arena view at byte
// offset `offset`. A CPU kernel takes its offsets as arguments (%off0, ...
// in KernelSource::offsets' order); a GPU kernel has them as constants.
bool loadsFromOffset(const codegen::KernelSource &kernel, int64_t offset) {
  const std::string &function = kernel.function;
  std::vector<std::string> offsetValues;
  for (size_t k = 0; k < kernel.offsets.size(); ++k)
    if (kernel.offsets[k] == offset)
      offsetValues.push_back("%off" + std::to_string(k));
  std::smatch m;
  std::regex constant("(%[A-Za-z0-9_]+) = arith.constant " + std::to_string(offset) + " : index");
  for (auto it = function.cbegin(); std::regex_search(it, function.cend(), m, constant);
       it = m.suffix().first)
    offsetValues.push_back(m[1].str());
  std::set<std::string> views;
  for (const std::string &value : offsetValues) {
    std::regex view("(%[A-Za-z0-9_]+) = memref.view %arena\\[" + value + "\\]");
    std::smatch v;
    for (auto jt = function.cbegin(); std::regex_search(jt, function.cend(), v, view);
         jt = v.suffix().first)
      views.insert(v[1].str());
  }
  for (const std::string &view : views)
    for (const char *load : {"memref.load ", "vector.load ", "vector.maskedload "})
      if (function.find(load + view + "[") != std::string::npos)
        return true;
  return false;
}

// Root dispatch follows the class: no op's loop nest reads its own output
// before writing it (what an op sent to the wrong nest would do), except a
// scatter-form op adding into its zeroed output.
TEST(OpClasses, OnlyScatterFormKernelsReadTheirOwnOutput) {
  Graph graph = parseGraph(testing::corpusText("every_op"));
  std::set<OpKind> seen;
  for (const OneOpKernel &k : oneOpKernels(graph)) {
    OpKind op = graph.node(k.value).op;
    SCOPED_TRACE(std::string(opInfo(op).name));
    seen.insert(op);
    EXPECT_EQ(loadsFromOffset(k.cpu, 4096 * int64_t(k.value + 1)),
              opInfo(op).is(kScatterForm));
  }
  // Every op that runs in a kernel was looked at.
  for (const OpInfo &info : allOps())
    if (info.opClass != OpClass::Source && info.opClass != OpClass::Constant &&
        info.opClass != OpClass::Collective)
      EXPECT_TRUE(seen.count(info.kind)) << info.name;
}

// On the GPU a scatter-form op's threads add into shared elements: its
// output is zeroed by a nest of its own first, and it is the only kind of
// op that adds atomically.
TEST(OpClasses, EveryScatterFormOpIsZeroedFirstOnTheGpu) {
  Graph graph = parseGraph(testing::corpusText("every_op"));
  for (const OneOpKernel &k : oneOpKernels(graph)) {
    OpKind op = graph.node(k.value).op;
    SCOPED_TRACE(std::string(opInfo(op).name));
    const auto &nests = k.gpu.gpuFunctions;
    ASSERT_FALSE(nests.empty());
    bool atomic = nests.back().function.find("memref.atomic_rmw") != std::string::npos;
    EXPECT_EQ(atomic, opInfo(op).is(kScatterForm));
    if (opInfo(op).is(kScatterForm)) {
      ASSERT_GE(nests.size(), 2u);
      const std::string &zeroing = nests[nests.size() - 2].function;
      EXPECT_NE(zeroing.find("memref.store"), std::string::npos);
      EXPECT_EQ(zeroing.find("memref.load"), std::string::npos);
    }
  }
}

// Dropout is placed as an elementwise op by every stage: fused with its
// producer, and the kernel split among threads by rows (the mask hashes the
// element's index in the whole tensor, which each thread computes).
TEST(OpClasses, DropoutFusesAndSplitsByRowsLikeAnElementwiseOp) {
  Graph graph = parseGraph(R"sg(
graph dropout_rows {
  input %x : f32[64,8]
  input %seed : i64[]
  %y = add(%x, %x)
  %d = dropout(%y, %seed) {rate=0.5}
  output y = %y
  output d = %d
}
)sg");
  FusionPlan plan = planFusion(graph);
  ValueId d = graph.outputs[1].value;
  FusionGroup group = plan.groups[plan.groupOf[d]];
  ASSERT_EQ(group.nodes.size(), 2u);
  std::function<int64_t(ValueId)> offset = [](ValueId v) { return 4096 * int64_t(v + 1); };
  std::vector<bool> usedOutside(graph.size(), true);
  group.kernel = planKernel(graph, group, usedOutside, codegen::kernelTarget(false));
  codegen::KernelSource kernel = codegen::lowerGroup(graph, group, offset, usedOutside, 1 << 20);
  EXPECT_EQ(kernel.parallelExtent, 64);

  TensorMap inputs{{"x", testing::randomTensor(DType::F32, {64, 8}, 11)},
                   {"seed", testing::randomTensor(DType::I64, {}, 12, 0, 1000)}};
  testing::CompareOptions options;
  options.threads = 4;
  testing::expectMatchesInterpreter(graph, inputs, {}, options);
}

} // namespace
} // namespace stepc
