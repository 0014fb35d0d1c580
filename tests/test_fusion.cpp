// Fusion and memory planning: the interpreter is the oracle (a plan run
// kernel by kernel, each seeing only its inputs, must give interpret()'s
// answer), the plans have the promised structure, the buffer plan never puts
// two live values in one place, and the figures of issue 4 hold.
#include "testing.h"

#include "fusion_plan.h"
#include "gradcheck.h"

#include "stepc/autodiff.h"
#include "stepc/error.h"
#include "stepc/interpreter.h"
#include "stepc/passes.h"
#include "stepc/text.h"
#include "stepc/train.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <set>
#include <stdexcept>
#include <unistd.h>

namespace stepc {
namespace {

using testing::freshSeed;
using testing::snippetGraph;

// The graphs of some tests, as .sg text.
const std::string kSnippets = "tests/snippets/fusion.sg";

Graph optimized(Graph graph) {
  PassManager manager;
  for (const std::string &name : defaultPipeline(!graph.updates.empty()))
    manager.add(name);
  manager.run(graph);
  return graph;
}

std::string valueName(const Graph &g, ValueId v) {
  return g.node(v).name.empty() ? fmt::format("%{}", v) : "%" + g.node(v).name;
}

bool isSource(const Graph &g, ValueId v) {
  OpKind op = g.node(v).op;
  return op == OpKind::Input || op == OpKind::Parameter;
}
bool isInlined(const Graph &g, ValueId v) {
  OpKind op = g.node(v).op;
  return op == OpKind::Constant || op == OpKind::Iota;
}

struct StepResult {
  TensorMap outputs;
  TensorMap params; // after the step's updates
};

// Runs a plan kernel by kernel. A kernel sees only its declared inputs (from
// the caller or from earlier kernels' outputs) and the constants it declares;
// everything else it computes is dropped when it finishes. Throws on any read
// the plan does not allow.
StepResult runPlan(const Graph &g, const FusionPlan &plan, const TensorMap &inputs,
                   const TensorMap &params) {
  std::map<ValueId, Tensor> memory; // what lives between kernels
  for (ValueId v = 0; v < g.size(); ++v) {
    if (!isSource(g, v))
      continue;
    const TensorMap &from = g.node(v).op == OpKind::Input ? inputs : params;
    memory[v] = from.at(g.node(v).name);
  }
  auto constant = [&](ValueId v) { return evaluateNode(g.node(v), {}); };
  for (size_t k = 0; k < plan.groups.size(); ++k) {
    const FusionGroup &group = plan.groups[k];
    std::map<ValueId, Tensor> local;
    for (ValueId in : group.inputs)
      if (!memory.count(in))
        throw std::runtime_error(fmt::format(
            "{} reads {} before any kernel wrote it", group.name, valueName(g, in)));
    for (ValueId c : group.constants)
      local[c] = constant(c);
    for (ValueId v : group.nodes) {
      std::vector<const Tensor *> operands;
      for (ValueId o : g.node(v).operands) {
        if (local.count(o)) {
          operands.push_back(&local.at(o));
        } else if (std::count(group.inputs.begin(), group.inputs.end(), o)) {
          operands.push_back(&memory.at(o));
        } else {
          throw std::runtime_error(
              fmt::format("{}: {} reads {}, which is neither an input of the kernel nor "
                          "computed in it",
                          group.name, valueName(g, v), valueName(g, o)));
        }
      }
      local[v] = evaluateNode(g.node(v), operands);
    }
    for (ValueId out : group.outputs)
      memory[out] = std::move(local.at(out));
  }
  auto final = [&](ValueId v) {
    if (memory.count(v))
      return memory.at(v);
    if (isInlined(g, v))
      return constant(v);
    throw std::runtime_error(fmt::format("{} is not an output of any kernel", valueName(g, v)));
  };
  StepResult result;
  for (const GraphOutput &o : g.outputs)
    result.outputs[o.name] = final(o.value);
  result.params = params;
  for (const ParamUpdate &u : g.updates)
    result.params[g.node(u.param).name] = final(u.value);
  return result;
}

// Structure every plan must have.
void checkStructure(const Graph &g, const FusionPlan &plan, const FusionOptions &options) {
  std::vector<int> seen(g.size(), 0);
  for (size_t k = 0; k < plan.groups.size(); ++k) {
    const FusionGroup &group = plan.groups[k];
    ASSERT_FALSE(group.nodes.empty()) << group.name;
    EXPECT_TRUE(std::is_sorted(group.nodes.begin(), group.nodes.end())) << group.name;
    EXPECT_EQ(group.name.rfind(fmt::format("k{}_", k), 0), 0u) << group.name;
    if (group.nodes.size() > 1) {
      EXPECT_LE(group.inputs.size(), options.maxInputs) << group.name;
    }
    for (ValueId v : group.nodes) {
      ++seen[v];
      EXPECT_EQ(plan.groupOf[v], static_cast<int>(k)) << valueName(g, v);
    }
    for (ValueId in : group.inputs) {
      EXPECT_FALSE(isInlined(g, in)) << group.name << " takes a constant as input";
      // No kernel reads a value produced by itself or a later kernel.
      EXPECT_LT(plan.groupOf[in], static_cast<int>(k))
          << group.name << " reads " << valueName(g, in) << " from a later kernel";
    }
    for (ValueId c : group.constants)
      EXPECT_TRUE(isInlined(g, c)) << valueName(g, c);
    int64_t read = 0, written = 0;
    for (ValueId in : group.inputs)
      read += g.type(in).numel() * static_cast<int64_t>(dtypeSize(g.type(in).dtype));
    for (ValueId out : group.outputs)
      written += g.type(out).numel() * static_cast<int64_t>(dtypeSize(g.type(out).dtype));
    EXPECT_GE(group.bytesRead, read) << group.name;
    EXPECT_EQ(group.bytesWritten, written) << group.name;
    if (!options.enabled) {
      EXPECT_EQ(group.nodes.size(), 1u);
      EXPECT_EQ(group.kind, FusionKind::Single);
    }
  }
  for (ValueId v = 0; v < g.size(); ++v) {
    if (isSource(g, v) || isInlined(g, v)) {
      EXPECT_EQ(seen[v], 0) << valueName(g, v) << " is a source but in a kernel";
      EXPECT_EQ(plan.groupOf[v], -1);
    } else {
      EXPECT_EQ(seen[v], 1) << valueName(g, v) << " is in " << seen[v] << " kernels";
    }
  }
}

// Lifetimes recomputed here from the plan, independently of planBuffers:
// [first kernel, last kernel] with params and inputs alive throughout.
struct Lifetime {
  int first, last;
};

void checkBuffers(const Graph &g, const FusionPlan &plan, const BufferPlan &bp) {
  const int end = static_cast<int>(plan.groups.size());
  std::map<ValueId, Lifetime> life;
  std::set<ValueId> escapes;
  for (const GraphOutput &o : g.outputs)
    escapes.insert(o.value);
  for (const ParamUpdate &u : g.updates)
    escapes.insert(u.value);
  for (ValueId v = 0; v < g.size(); ++v)
    if (isSource(g, v))
      life[v] = {0, end};
  for (int k = 0; k < end; ++k) {
    for (ValueId out : plan.groups[k].outputs)
      life[out] = {k, escapes.count(out) ? end : k};
  }
  for (int k = 0; k < end; ++k)
    for (ValueId in : plan.groups[k].inputs)
      life.at(in).last = std::max(life.at(in).last, k);

  std::map<ValueId, const Buffer *> byValue;
  for (const Buffer &b : bp.buffers) {
    byValue[b.value] = &b;
    EXPECT_EQ(b.offset % 64, 0) << valueName(g, b.value);
    EXPECT_LE(b.offset + b.bytes, bp.arenaBytes) << valueName(g, b.value);
    EXPECT_EQ(b.bytes, g.type(b.value).numel() *
                           static_cast<int64_t>(dtypeSize(g.type(b.value).dtype)));
  }
  for (auto &[v, l] : life)
    EXPECT_TRUE(byValue.count(v)) << valueName(g, v) << " has no buffer";

  // In-place reuse only where legal.
  auto rootOf = [&](ValueId v) {
    while (byValue.at(v)->reuses >= 0)
      v = static_cast<ValueId>(byValue.at(v)->reuses);
    return v;
  };
  for (const Buffer &b : bp.buffers) {
    if (b.reuses < 0)
      continue;
    ValueId old = static_cast<ValueId>(b.reuses);
    ASSERT_TRUE(byValue.count(old));
    EXPECT_EQ(byValue.at(old)->offset, b.offset);
    EXPECT_EQ(byValue.at(old)->bytes, b.bytes);
    int writer = plan.groupOf[b.value];
    ASSERT_GE(writer, 0) << valueName(g, b.value) << " reuses a buffer but no kernel writes it";
    if (g.node(old).op == OpKind::Parameter) {
      bool isUpdate = false;
      for (const ParamUpdate &u : g.updates)
        isUpdate = isUpdate || (u.param == old && u.value == b.value);
      EXPECT_TRUE(isUpdate) << valueName(g, b.value) << " overwrites param "
                            << valueName(g, old) << " but is not its new value";
      for (int k = writer + 1; k < end; ++k)
        for (ValueId in : plan.groups[k].inputs)
          EXPECT_NE(in, old) << plan.groups[k].name << " reads " << valueName(g, old)
                             << " after its update overwrote it";
    } else {
      EXPECT_NE(g.node(old).op, OpKind::Input) << "a graph input was overwritten";
      EXPECT_FALSE(escapes.count(old)) << valueName(g, old) << " is still needed";
      EXPECT_EQ(life.at(old).last, writer)
          << valueName(g, b.value) << " overwrites " << valueName(g, old) << " before it dies";
    }
  }

  // Values alive at the same time never share bytes (unless one was written
  // over the other in place).
  std::vector<ValueId> values;
  for (auto &[v, l] : life)
    values.push_back(v);
  for (size_t i = 0; i < values.size(); ++i)
    for (size_t j = i + 1; j < values.size(); ++j) {
      ValueId a = values[i], b = values[j];
      const Lifetime &la = life.at(a), &lb = life.at(b);
      if (la.last < lb.first || lb.last < la.first || rootOf(a) == rootOf(b))
        continue;
      const Buffer &ba = *byValue.at(a), &bb = *byValue.at(b);
      bool disjoint = ba.offset + ba.bytes <= bb.offset || bb.offset + bb.bytes <= ba.offset;
      EXPECT_TRUE(disjoint) << valueName(g, a) << " and " << valueName(g, b)
                            << " are alive together but overlap";
    }
  EXPECT_GE(bp.arenaBytes, bp.liveLowerBound);
}

struct Case {
  std::string name;
  Graph graph;
};

// Every example, and its Adam training step, raw and after the default
// pipeline.
std::vector<Case> exampleCases() {
  std::vector<Case> cases;
  std::vector<std::filesystem::path> files;
  for (const auto &entry :
       std::filesystem::directory_iterator(testing::sourcePath("examples")))
    if (entry.path().extension() == ".sg")
      files.push_back(entry.path());
  std::sort(files.begin(), files.end());
  for (const auto &file : files) {
    Graph model = parseGraphFile(file.string());
    std::string stem = file.stem().string();
    cases.push_back({stem, model});
    if (model.findOutput("loss"))
      cases.push_back({stem + " step", trainStep(model, "loss", Optimizer::adam())});
  }
  size_t raw = cases.size();
  for (size_t i = 0; i < raw; ++i)
    cases.push_back({cases[i].name + " (optimized)", optimized(cases[i].graph)});
  return cases;
}

// The plan run kernel by kernel gives the interpreter's outputs and updated
// params, bit for bit.
void expectSameResults(const Graph &g, const FusionPlan &plan, const TensorMap &inputs) {
  TensorMap params = initialParams(g);
  TensorMap expectedParams = params;
  TensorMap expected = interpretStep(g, inputs, expectedParams);
  StepResult actual;
  try {
    actual = runPlan(g, plan, inputs, params);
  } catch (const std::exception &e) {
    FAIL() << e.what();
  }
  for (auto &[name, tensor] : expected)
    EXPECT_TRUE(testing::allClose(actual.outputs.at(name), tensor, 0, 0)) << "output " << name;
  for (auto &[name, tensor] : expectedParams)
    EXPECT_TRUE(testing::allClose(actual.params.at(name), tensor, 0, 0)) << "param " << name;
}

void expectSameResults(const Graph &g, const FusionPlan &plan, uint64_t seed) {
  expectSameResults(g, plan, randomInputs(g, seed));
}

TEST(Fusion, PlansRunKernelByKernelAsTheInterpreter) {
  uint64_t seed = freshSeed();
  SCOPED_TRACE(fmt::format("seed {}", seed));
  for (const Case &c : exampleCases()) {
    for (bool enabled : {true, false}) {
      SCOPED_TRACE(fmt::format("{} ({})", c.name, enabled ? "fused" : "unfused"));
      FusionOptions options{.enabled = enabled};
      FusionPlan plan = planFusion(c.graph, options);
      checkStructure(c.graph, plan, options);
      expectSameResults(c.graph, plan, seed);
      BufferPlan bp = planBuffers(c.graph, plan);
      checkBuffers(c.graph, plan, bp);
    }
  }
}

// Every op and composite of the gradient checks, with its gradient graph:
// views, opaque ops, conv and pool gradients, dropout, all in plans.
TEST(Fusion, EveryOpAndItsGradientRunKernelByKernel) {
  uint64_t seed = freshSeed();
  SCOPED_TRACE(fmt::format("seed {}", seed));
  for (const GradcheckCase &c : gradcheckCases()) {
    Graph forward = c.build();
    std::vector<std::string> wrt;
    for (ValueId v : forward.inputs())
      if (isFloat(forward.type(v).dtype))
        wrt.push_back(forward.node(v).name);
    for (ValueId v : forward.params())
      if (isFloat(forward.type(v).dtype))
        wrt.push_back(forward.node(v).name);
    Graph backward = grad(forward, "loss", wrt).graph;
    TensorMap inputs = c.point(forward, seed);
    for (const Graph &g : {forward, backward, optimized(backward)}) {
      for (bool enabled : {true, false}) {
        SCOPED_TRACE(fmt::format("{} ({}, {} nodes)", c.name, enabled ? "fused" : "unfused",
                                 g.size()));
        FusionOptions options{.enabled = enabled};
        FusionPlan plan = planFusion(g, options);
        checkStructure(g, plan, options);
        expectSameResults(g, plan, inputs);
        checkBuffers(g, plan, planBuffers(g, plan));
      }
    }
  }
}

// Steps of every optimizer, with weight decay and gradient clipping.
TEST(Fusion, EveryOptimizerStepRunsKernelByKernel) {
  uint64_t seed = freshSeed();
  SCOPED_TRACE(fmt::format("seed {}", seed));
  for (const char *example : {"xor.sg", "attention.sg"}) {
    Graph model = parseGraphFile(testing::sourcePath(std::string("examples/") + example));
    for (Optimizer::Kind kind :
         {Optimizer::Kind::Sgd, Optimizer::Kind::Momentum, Optimizer::Kind::Nesterov,
          Optimizer::Kind::RmsProp, Optimizer::Kind::Adam, Optimizer::Kind::AdamW}) {
      Optimizer opt{.kind = kind, .weightDecay = 0.01, .clipNorm = 1.0};
      Graph step = optimized(trainStep(model, "loss", opt));
      SCOPED_TRACE(fmt::format("{} {}", example, optimizerName(kind)));
      FusionPlan plan = planFusion(step);
      checkStructure(step, plan, {});
      expectSameResults(step, plan, seed);
      checkBuffers(step, plan, planBuffers(step, plan));
    }
  }
}

TEST(Fusion, TightInputBoundStillRunsCorrectly) {
  uint64_t seed = freshSeed();
  SCOPED_TRACE(fmt::format("seed {}", seed));
  Graph step = optimized(trainStep(parseGraphFile(testing::sourcePath("examples/attention.sg")),
                                   "loss", Optimizer::adam()));
  FusionOptions options{.maxInputs = 3};
  FusionPlan plan = planFusion(step, options);
  checkStructure(step, plan, options);
  expectSameResults(step, plan, seed);
  bool limited = false;
  for (const FusionRefusal &r : plan.refusals)
    limited = limited || r.rule.find("(limit 3)") != std::string::npos;
  EXPECT_TRUE(limited) << whyNotFused(step, plan);
}

int kernelCount(const std::string &text) {
  Graph g = parseGraph(text, "snippet.sg");
  FusionPlan plan = planFusion(g);
  checkStructure(g, plan, {});
  return static_cast<int>(plan.groups.size());
}

TEST(Fusion, SoftmaxLayerNormCrossEntropyAreFewKernels) {
  EXPECT_LE(kernelCount(R"(graph s {
    input %x : f32[8,16]
    %y = softmax(%x) {axis=-1}
    output y = %y
  })"), 3);
  EXPECT_LE(kernelCount(R"(graph ln {
    input %x : f32[4,8,32]
    param %g : f32[32] = ones()
    param %b : f32[32] = zeros()
    %y = layer_norm(%x, %g, %b) {eps=1e-05}
    output y = %y
  })"), 3);
  EXPECT_LE(kernelCount(R"(graph ce {
    input %logits : f32[16,10]
    input %labels : i32[16]
    %loss = cross_entropy(%logits, %labels)
    output loss = %loss
  })"), 3);
}

TEST(Fusion, MatmulBiasReluIsOneEpilogueKernel) {
  Graph g = parseGraph(R"(graph dense {
    input %x : f32[32,64]
    param %w : f32[64,16] = he_uniform(seed=1)
    param %b : f32[16] = zeros()
    %z = linear(%x, %w, %b)
    %h = relu(%z)
    output h = %h
  })", "dense.sg");
  FusionPlan plan = planFusion(g);
  ASSERT_EQ(plan.groups.size(), 1u) << fusionReport(g, plan, planBuffers(g, plan));
  EXPECT_EQ(plan.groups[0].kind, FusionKind::Epilogue);
  EXPECT_EQ(plan.groups[0].name, "k0_matmul_add_relu");
  EXPECT_EQ(plan.groups[0].outputs, std::vector<ValueId>{*g.findOutput("h")});
}

// torch.optim.Adam's update of one parameter, its gradient given: m, v and
// the parameter are updated in one pass over memory, in place.
TEST(Fusion, AdamUpdateIsOneMultiOutputKernelInPlace) {
  Graph g = snippetGraph(kSnippets, "adam");
  FusionPlan plan = planFusion(g);
  ASSERT_EQ(plan.groups.size(), 1u) << fusionReport(g, plan, planBuffers(g, plan));
  const FusionGroup &k = plan.groups[0];
  EXPECT_EQ(k.kind, FusionKind::MultiOutput);
  EXPECT_EQ(k.outputs.size(), 3u);
  EXPECT_TRUE(k.constants.size() == 5u); // scalars are no inputs
  EXPECT_EQ(k.inputs.size(), 5u);        // g, lr, p, m, v
  BufferPlan bp = planBuffers(g, plan);
  checkBuffers(g, plan, bp);
  for (const Buffer &b : bp.buffers)
    for (const ParamUpdate &u : g.updates)
      if (b.value == u.value) {
        EXPECT_EQ(b.reuses, static_cast<int64_t>(u.param)) << valueName(g, u.value);
      }
  // Nothing but the state and the batch, up to 64-byte alignment.
  EXPECT_LT(bp.arenaBytes, bp.liveLowerBound + 64 * static_cast<int64_t>(bp.buffers.size()));
}

// Unfused, each elementwise op writes over the temporary it consumes, unless
// that temporary is read again later or read through a broadcast.
TEST(Fusion, ElementwiseOutputsReuseDeadInputs) {
  Graph g = parseGraph(R"(graph chain {
    input %x : f32[64,32]
    input %row : f32[32]
    %a = exp(%x)
    %b = neg(%a)
    %c = tanh(%b)
    %r = exp(%row)
    %d = add(%c, %r)
    %e = mul(%d, %c)
    output e = %e
  })", "chain.sg");
  FusionPlan plan = planFusion(g, {.enabled = false});
  BufferPlan bp = planBuffers(g, plan);
  checkBuffers(g, plan, bp);
  std::map<std::string, int64_t> reuses;
  for (const Buffer &b : bp.buffers)
    reuses[valueName(g, b.value)] = b.reuses < 0 ? -1 : static_cast<int64_t>(b.reuses);
  auto id = [&](const char *name) { return static_cast<int64_t>(*g.findNamed(name)); };
  EXPECT_EQ(reuses["%a"], -1); // x is the caller's
  EXPECT_EQ(reuses["%b"], id("a"));
  EXPECT_EQ(reuses["%c"], id("b"));
  EXPECT_EQ(reuses["%d"], -1); // c is read again by e; r is read broadcast
  EXPECT_TRUE(reuses["%e"] == id("c") || reuses["%e"] == id("d")); // both die at e
  // Fused, the whole chain is one kernel reading x and row, writing e.
  FusionPlan fused = planFusion(g);
  ASSERT_EQ(fused.groups.size(), 2u) << fusionReport(g, fused, planBuffers(g, fused));
}

// In a real training step every parameter's update and its moments' land in
// one kernel (with the gradient's matmul or reduction when they can), and all
// of them are written in place.
TEST(Fusion, TrainingStepUpdatesParamsAndMomentsTogetherInPlace) {
  Graph step = optimized(trainStep(parseGraphFile(testing::sourcePath("examples/mlp.sg")),
                                   "loss", Optimizer::adam()));
  FusionPlan plan = planFusion(step);
  BufferPlan bp = planBuffers(step, plan);
  std::map<std::string, ValueId> newValue;
  for (const ParamUpdate &u : step.updates)
    newValue[step.node(u.param).name] = u.value;
  for (const char *p : {"w1", "b1", "w2", "b2", "w3", "b3"}) {
    int k = plan.groupOf[newValue.at(p)];
    EXPECT_EQ(plan.groupOf[newValue.at(std::string(p) + ".m")], k) << p;
    EXPECT_EQ(plan.groupOf[newValue.at(std::string(p) + ".v")], k) << p;
    EXPECT_GE(plan.groups[k].outputs.size(), 3u) << p;
  }
  for (const Buffer &b : bp.buffers)
    for (const ParamUpdate &u : step.updates)
      if (b.value == u.value) {
        EXPECT_EQ(b.reuses, static_cast<int64_t>(u.param))
            << step.node(u.param).name << " is not updated in place";
      }
}

TEST(Fusion, RefusalsCarryTheirRule) {
  Graph g = parseGraph(R"(graph scores {
    input %q : f32[16,8]
    input %k : f32[8,16]
    input %table : f32[16,8]
    input %ids : i32[16]
    %s = matmul(%q, %k)
    %p = softmax(%s) {axis=-1}
    %e = exp(%table)
    %rows = gather(%e, %ids) {axis=0}
    %r = add(%e, %rows)
    %t = reduce_sum(%r) {axes=[0], keepdims=0}
    %u = reduce_sum(%r) {axes=[1], keepdims=0}
    output p = %p
    output t = %t
    output u = %u
  })", "scores.sg");
  FusionPlan plan = planFusion(g);
  checkStructure(g, plan, {});
  std::string why = whyNotFused(g, plan);
  auto refused = [&](std::string_view producer, std::string_view consumer,
                     std::string_view rule) {
    for (const FusionRefusal &r : plan.refusals)
      if (valueName(g, r.producer) == producer && valueName(g, r.consumer) == consumer &&
          r.rule.find(rule) != std::string::npos)
        return true;
    return false;
  };
  // A softmax over a matmul's result needs all of it.
  EXPECT_TRUE(refused("%s", "%5", "needs the matmul's whole result")) << why;
  // gather runs alone; exp -> add would then be a cycle around it.
  EXPECT_TRUE(refused("%e", "%rows", "runs alone")) << why;
  EXPECT_TRUE(refused("%rows", "%r", "runs alone")) << why;
  EXPECT_TRUE(refused("%e", "%r", "cycle")) << why;
  // Two reductions of one value over different axes are two kernels.
  EXPECT_TRUE(refused("%r", "%u", "reductions over different spaces")) << why;
  EXPECT_NE(why.find("scores.sg:"), std::string::npos) << why;
  // matmul; softmax; exp; gather; add + one reduction; the other reduction
  EXPECT_EQ(plan.groups.size(), 6u) << fusionReport(g, plan, planBuffers(g, plan)) << why;
  expectSameResults(g, plan, freshSeed());
}

TEST(Fusion, TransposeOfAWeightFoldsIntoTheMatmul) {
  Graph g = parseGraph(R"(graph t {
    input %x : f32[32,64]
    param %w : f32[16,64] = he_uniform(seed=1)
    %wt = transpose(%w) {perm=[1,0]}
    %y = matmul(%x, %wt)
    output y = %y
  })", "t.sg");
  FusionPlan plan = planFusion(g);
  ASSERT_EQ(plan.groups.size(), 1u);
  EXPECT_EQ(plan.groups[0].outputs, std::vector<ValueId>{*g.findOutput("y")});

  // A pad is no strided view: it is materialized first.
  Graph padded = parseGraph(R"(graph p {
    input %x : f32[32,64]
    param %w : f32[60,16] = he_uniform(seed=1)
    %wp = pad(%w) {low=[2,0], high=[2,0], value=0.0}
    %y = matmul(%x, %wp)
    output y = %y
  })", "p.sg");
  FusionPlan separate = planFusion(padded);
  EXPECT_EQ(separate.groups.size(), 2u);
  EXPECT_NE(whyNotFused(padded, separate).find("no strided view"), std::string::npos)
      << whyNotFused(padded, separate);
}

// A reshape of a matmul kernel's result that changes dimension 0 would keep
// the kernel from splitting its rows among threads: it stays out, and the
// next matmul reads it in place; one that keeps dimension 0 joins.
TEST(Fusion, ReshapeAcrossRowsStaysOutOfTheMatmulKernel) {
  Graph g = parseGraph(R"(graph r {
    input %x : f32[4,8,16]
    param %w : f32[16,32] = he_uniform(seed=1)
    param %v : f32[32,8] = he_uniform(seed=2)
    %y = matmul(%x, %w)
    %h = relu(%y)
    %rows = reshape(%h) {shape=[32,32]}
    %heads = reshape(%h) {shape=[4,8,2,16]}
    %z = matmul(%rows, %v)
    output z = %z
    output heads = %heads
  })", "r.sg");
  FusionPlan plan = planFusion(g);
  std::string why = whyNotFused(g, plan);
  ValueId heads = *g.findOutput("heads"), rows = *g.findNamed("rows"), y = *g.findNamed("y");
  auto groupOf = [&](ValueId v) {
    for (size_t k = 0; k < plan.groups.size(); ++k)
      for (ValueId n : plan.groups[k].nodes)
        if (n == v)
          return k;
    return plan.groups.size();
  };
  EXPECT_EQ(groupOf(heads), groupOf(y)) << why;
  EXPECT_NE(groupOf(rows), groupOf(y)) << why;
  expectSameResults(g, plan, freshSeed());
}

TEST(Fusion, UnfusedModeIsOneKernelPerOp) {
  Graph g = optimized(trainStep(parseGraphFile(testing::sourcePath("examples/xor.sg")), "loss",
                                Optimizer::adam()));
  FusionPlan plan = planFusion(g, {.enabled = false});
  checkStructure(g, plan, {.enabled = false});
  size_t ops = 0;
  for (ValueId v = 0; v < g.size(); ++v)
    ops += !isSource(g, v) && !isInlined(g, v);
  EXPECT_EQ(plan.groups.size(), ops);
  EXPECT_TRUE(plan.refusals.empty());
}

// Fusing a subset of the full plan's groups (fusion bisection): the kept
// groups are the full plan's, everything else is one op per kernel, and the
// plan still runs kernel by kernel as the interpreter on every example.
TEST(Fusion, SubsetOfGroupsStaysFusedAndRuns) {
  uint64_t seed = freshSeed();
  SCOPED_TRACE(fmt::format("seed {}", seed));
  for (const Case &c : exampleCases()) {
    SCOPED_TRACE(c.name);
    FusionPlan full = planFusion(c.graph);
    std::vector<size_t> fused, kept;
    for (size_t g = 0; g < full.groups.size(); ++g)
      if (full.groups[g].nodes.size() > 1)
        fused.push_back(g);
    for (size_t i = 0; i < fused.size(); i += 2) // every other fused group
      kept.push_back(fused[i]);
    FusionOptions options{.fusedGroups = kept};
    FusionPlan plan = planFusion(c.graph, options);
    checkStructure(c.graph, plan, options);
    expectSameResults(c.graph, plan, seed);
    checkBuffers(c.graph, plan, planBuffers(c.graph, plan));
    std::set<std::vector<ValueId>> keptNodes, multi;
    for (size_t g : kept)
      keptNodes.insert(full.groups[g].nodes);
    for (const FusionGroup &group : plan.groups)
      if (group.nodes.size() > 1)
        multi.insert(group.nodes);
    EXPECT_EQ(multi, keptNodes);
    // Everything kept is the full plan; nothing kept is the unfused plan.
    EXPECT_EQ(planFusion(c.graph, {.fusedGroups = fused}).groups.size(), full.groups.size());
    EXPECT_EQ(planFusion(c.graph, {.fusedGroups = std::vector<size_t>{}}).groups.size(),
              planFusion(c.graph, {.enabled = false}).groups.size());
  }
  Graph xor_ = parseGraphFile(testing::sourcePath("examples/xor.sg"));
  EXPECT_THROW(planFusion(xor_, {.fusedGroups = std::vector<size_t>{999}}), Error);
}

// Bisection against known culprits: one culprit anywhere is found in at
// most ceil(log2 n) + 1 probes; several (independent, or failing only
// together) are all found, and the result is 1-minimal.
TEST(Fusion, BisectionFindsCulpritsInLogarithmicProbes) {
  for (size_t n = 1; n <= 40; ++n) {
    std::vector<size_t> candidates;
    for (size_t i = 0; i < n; ++i)
      candidates.push_back(3 * i + 1); // group indices need not be contiguous
    size_t log2n = 0;
    while ((size_t(1) << log2n) < n)
      ++log2n;
    for (size_t culprit = 0; culprit < n; ++culprit) {
      int probes = 0;
      auto fails = [&](const std::vector<size_t> &set) {
        ++probes;
        return std::count(set.begin(), set.end(), candidates[culprit]) > 0;
      };
      EXPECT_EQ(bisectFusedGroups(candidates, fails), std::vector<size_t>{candidates[culprit]})
          << n << " candidates, culprit " << culprit;
      EXPECT_LE(probes, static_cast<int>(log2n) + 1) << n << " candidates, culprit " << culprit;
    }
    for (size_t a = 0; a < n; ++a)
      for (size_t b = a + 1; b < n; ++b) {
        std::vector<size_t> both{candidates[a], candidates[b]};
        auto has = [](const std::vector<size_t> &set, size_t g) {
          return std::count(set.begin(), set.end(), g) > 0;
        };
        // Independent faults: each one alone fails.
        EXPECT_EQ(bisectFusedGroups(candidates,
                                    [&](const std::vector<size_t> &set) {
                                      return has(set, both[0]) || has(set, both[1]);
                                    })
                      .size(),
                  1u);
        // Two faults that pass the tolerance only together.
        EXPECT_EQ(bisectFusedGroups(candidates,
                                    [&](const std::vector<size_t> &set) {
                                      return has(set, both[0]) && has(set, both[1]);
                                    }),
                  both);
      }
  }
}

TEST(Fusion, ReportDotAndProvenance) {
  Graph step = optimized(trainStep(parseGraphFile(testing::sourcePath("examples/mlp.sg")),
                                   "loss", Optimizer::adam()));
  FusionPlan plan = planFusion(step);
  BufferPlan bp = planBuffers(step, plan);
  std::string report = fusionReport(step, plan, bp);
  int64_t moved = 0;
  for (const FusionGroup &k : plan.groups)
    moved += k.bytesRead + k.bytesWritten;
  std::string last = fmt::format("total: {} kernels, {} bytes read+written, peak arena {} bytes\n",
                                 plan.groups.size(), moved, bp.arenaBytes);
  ASSERT_GE(report.size(), last.size());
  EXPECT_EQ(report.substr(report.size() - last.size()), last) << report;
  EXPECT_NE(report.find("mlp.sg:"), std::string::npos) << report;
  EXPECT_NE(report.find("gradient of matmul"), std::string::npos) << report;
  EXPECT_NE(report.find("adam optimizer"), std::string::npos) << report;
  for (const FusionGroup &k : plan.groups)
    EXPECT_NE(report.find(k.name), std::string::npos);

  std::string dot = fusionDot(step, plan);
  EXPECT_EQ(dot.rfind("digraph", 0), 0u);
  for (size_t k = 0; k < plan.groups.size(); ++k)
    EXPECT_NE(dot.find(fmt::format("subgraph cluster_{} {{", k)), std::string::npos);
  EXPECT_EQ(std::count(dot.begin(), dot.end(), '{'), std::count(dot.begin(), dot.end(), '}'));
}

// `stepc opt` with the fusion flags, as a user runs it (skipped when the
// tool was not built).
TEST(Fusion, OptCommandFlags) {
  const char *bin = std::getenv("STEPC_BIN");
  if (!bin || !std::filesystem::exists(bin))
    GTEST_SKIP() << "the stepc tool is not built";
  std::string mlp = testing::sourcePath("examples/mlp.sg");

  // The CLI prints the report of the optimized graph: the same last line as
  // fusionReport() gives here.
  Graph graph = optimized(parseGraphFile(mlp));
  auto lastLine = [](const std::string &text) {
    size_t start = text.rfind('\n', text.size() - 2);
    return text.substr(start == std::string::npos ? 0 : start + 1);
  };
  for (bool enabled : {true, false}) {
    FusionPlan plan = planFusion(graph, {.enabled = enabled});
    std::string expected = lastLine(fusionReport(graph, plan, planBuffers(graph, plan)));
    testing::CommandResult r = testing::stepcCommand("opt " + mlp + " --fusion-report" +
                                                     (enabled ? "" : " --no-fusion"));
    EXPECT_EQ(r.status, 0) << r.output;
    EXPECT_EQ(lastLine(r.output), expected) << r.output;
    EXPECT_EQ(r.output.find("graph mlp"), std::string::npos) << "the report replaces the graph";
    if (enabled) {
      EXPECT_NE(r.output.find("k0_matmul_add_relu"), std::string::npos) << r.output;
    }
  }

  testing::CommandResult why = testing::stepcCommand("opt " + mlp + " --why-not-fused");
  EXPECT_EQ(why.status, 0) << why.output;
  EXPECT_NE(why.output.find("one matmul/conv per kernel"), std::string::npos) << why.output;

  std::string dot = (std::filesystem::temp_directory_path() /
                     fmt::format("stepc_fusion_{}.dot", ::getpid()))
                        .string();
  testing::CommandResult written = testing::stepcCommand("opt " + mlp + " --dot " + dot);
  EXPECT_EQ(written.status, 0) << written.output;
  EXPECT_TRUE(std::filesystem::exists(dot));
  std::filesystem::remove(dot);

  // Without Graphviz on PATH, --svg says what is missing and fails.
  testing::CommandResult svg = testing::stepcCommand("opt " + mlp + " --svg out.svg");
  if (std::system("command -v dot >/dev/null 2>&1") != 0) {
    EXPECT_NE(svg.status, 0);
    EXPECT_NE(svg.output.find("--svg out.svg: Graphviz's 'dot' is not on PATH"),
              std::string::npos)
        << svg.output;
  }
}

// --why-not-fused names values as `stepc print FILE` does, although the
// passes drop (%5) and fold (%2-%4) values and so renumber the rest; and a
// reduction before a matmul is not said to reduce the matmul's result.
TEST(Fusion, WhyNotFusedNamesValuesAsPrintDoes) {
  const char *bin = std::getenv("STEPC_BIN");
  if (!bin || !std::filesystem::exists(bin))
    GTEST_SKIP() << "the stepc tool is not built";
  std::string file = (std::filesystem::temp_directory_path() /
                      fmt::format("stepc_why_{}.sg", ::getpid()))
                         .string();
  {
    std::FILE *out = std::fopen(file.c_str(), "w");
    ASSERT_NE(out, nullptr);
    std::fputs(R"(graph why {
  input %x : f32[8,16]
  input %w : f32[16,4]
  %2 = constant() {dtype=f32, shape=[], value=2.0}
  %3 = constant() {dtype=f32, shape=[], value=3.0}
  %4 = mul(%2, %3)
  %5 = exp(%x)
  %6 = reduce_max(%x) {axes=[1], keepdims=1}
  %7 = sub(%x, %6)
  %8 = matmul(%7, %w)
  %9 = mul(%8, %4)
  output y = %9
}
)",
               out);
    std::fclose(out);
  }
  testing::CommandResult why = testing::stepcCommand("opt " + file + " --why-not-fused");
  std::filesystem::remove(file);
  EXPECT_EQ(why.status, 0) << why.output;
  EXPECT_NE(why.output.find("%7 (sub, " + file + ":9:3) -> %8 (matmul, " + file + ":10:3): "
                            "%8 (matmul) comes after %6 (reduce_max): a kernel is built "
                            "around one matmul/conv or one reduction"),
            std::string::npos)
      << why.output;
  EXPECT_EQ(why.output.find("reduces the result of"), std::string::npos) << why.output;
}

struct Figures {
  size_t kernels, kernelsUnfused;
  int64_t bytes, bytesUnfused, arena, bound;
};

Figures measure(const std::string &example) {
  Graph step = optimized(trainStep(parseGraphFile(testing::sourcePath("examples/" + example)),
                                   "loss", Optimizer::adam()));
  auto totals = [&](bool enabled, size_t &kernels, int64_t &bytes) {
    FusionPlan plan = planFusion(step, {.enabled = enabled});
    kernels = plan.groups.size();
    bytes = 0;
    for (const FusionGroup &k : plan.groups)
      bytes += k.bytesRead + k.bytesWritten;
    return plan;
  };
  Figures f{};
  FusionPlan plan = totals(true, f.kernels, f.bytes);
  totals(false, f.kernelsUnfused, f.bytesUnfused);
  BufferPlan bp = planBuffers(step, plan);
  f.arena = bp.arenaBytes;
  f.bound = bp.liveLowerBound;
  fmt::print("{} Adam step: kernels {} fused / {} unfused ({:.3f}); bytes moved {} / {} "
             "({:.3f}); peak arena {} vs bound {} ({:.3f}x)\n",
             example, f.kernels, f.kernelsUnfused, double(f.kernels) / f.kernelsUnfused,
             f.bytes, f.bytesUnfused, double(f.bytes) / f.bytesUnfused, f.arena, f.bound,
             double(f.arena) / f.bound);
  return f;
}

// Issue 4's figures, on mlp.sg's Adam training step at batch 128.
TEST(Fusion, MlpTrainingStepFigures) {
  Figures f = measure("mlp.sg");
  EXPECT_LE(3 * f.kernels, f.kernelsUnfused);
  EXPECT_LE(2 * f.bytes, f.bytesUnfused);
  EXPECT_LE(f.arena * 4, f.bound * 5); // arena <= 1.25 x bound
  EXPECT_GE(f.arena, f.bound);
}

// The same figures for the other models, printed for the closing note.
TEST(Fusion, CnnAndAttentionTrainingStepFigures) {
  for (const char *example : {"cnn.sg", "attention.sg"}) {
    Figures f = measure(example);
    EXPECT_LT(f.kernels, f.kernelsUnfused);
    EXPECT_LT(f.bytes, f.bytesUnfused);
    EXPECT_GE(f.arena, f.bound);
  }
}

// --- Kernel plans (planKernel): what each kernel stores and how ----------

// A target whose matmul reads every operand in place as a strided view (as
// the CPU's register-tiled matmul), or none (only row-major buffers, as the
// GPU's); either computes every epilogue the plan proposes on its tile.
// (FusionKernelTarget below plans with codegen's targets.)
KernelTarget readsInPlace(bool strided) {
  return {[strided](const Graph &, const FusionGroup &, ValueId) {
            return std::vector<bool>{strided, strided};
          },
          [](const Graph &, const FusionGroup &, const std::vector<ValueId> &, ValueId,
             const std::vector<ValueId> &) { return true; }};
}

std::vector<ValueId> values(const Graph &g, std::initializer_list<const char *> names) {
  std::vector<ValueId> out;
  for (const char *name : names)
    out.push_back(*g.findNamed(name));
  return out;
}

// Each root is in exactly one nest, in the roots' order; an epilogue is the
// roots of all the nests after its product's.
void checkKernelPlan(const Graph &g, const FusionGroup &group) {
  const KernelPlan &kernel = group.kernel;
  std::vector<ValueId> nestRoots;
  for (size_t k = 0; k < kernel.nests.size(); ++k) {
    const LoopNest &nest = kernel.nests[k];
    ASSERT_FALSE(nest.roots.empty()) << group.name;
    nestRoots.insert(nestRoots.end(), nest.roots.begin(), nest.roots.end());
    if (nest.kind != NestKind::Elementwise)
      EXPECT_EQ(nest.roots.size(), 1u) << group.name;
    for (ValueId r : nest.roots)
      EXPECT_EQ(isInlinable(g.node(r).op), nest.kind == NestKind::Elementwise)
          << group.name << ": " << valueName(g, r) << " in a " << nestKindName(nest.kind)
          << " nest";
    if (!nest.epilogue.empty()) {
      std::vector<ValueId> later;
      for (size_t j = k + 1; j < kernel.nests.size(); ++j)
        later.insert(later.end(), kernel.nests[j].roots.begin(), kernel.nests[j].roots.end());
      EXPECT_EQ(nest.epilogue, later) << group.name;
    }
  }
  if (group.kind != FusionKind::Attention) {
    EXPECT_EQ(nestRoots, kernel.roots) << group.name;
  }
}

// `g`'s plan into `plan`: one group, of `kind`, its kernel planned for a target
// that reads operands in place, and checked.
void planOneKernel(const Graph &g, FusionKind kind, FusionPlan &plan) {
  plan = planFusion(g);
  ASSERT_EQ(plan.groups.size(), 1u) << fusionReport(g, plan, planBuffers(g, plan));
  ASSERT_EQ(plan.groups[0].kind, kind);
  planKernels(g, plan, readsInPlace(true));
  checkKernelPlan(g, plan.groups[0]);
}

TEST(FusionKernelPlan, MatmulBiasReluComputesTheActivationOnTheProductsTile) {
  Graph g = parseGraph(R"(graph dense {
    input %x : f32[32,64]
    param %w : f32[16,64] = he_uniform(seed=1)
    param %b : f32[16] = zeros()
    %wt = transpose(%w) {perm=[1,0]}
    %z = matmul(%x, %wt)
    %zb = add(%z, %b)
    %h = relu(%zb)
    output h = %h
  })", "dense.sg");
  for (bool strided : {true, false}) {
    SCOPED_TRACE(strided ? "strided operands" : "row-major operands");
    FusionPlan plan = planFusion(g);
    ASSERT_EQ(plan.groups.size(), 1u) << fusionReport(g, plan, planBuffers(g, plan));
    planKernels(g, plan, readsInPlace(strided));
    const FusionGroup &group = plan.groups[0];
    checkKernelPlan(g, group);
    const KernelPlan &kernel = group.kernel;
    // Read in place, the transposed weight is inlined into the product;
    // else it is stored row-major first, in a nest of its own.
    std::vector<ValueId> roots = strided ? values(g, {"z", "h"}) : values(g, {"wt", "z", "h"});
    EXPECT_EQ(kernel.roots, roots);
    ASSERT_EQ(kernel.nests.size(), roots.size());
    const LoopNest &product = kernel.nests[roots.size() - 2];
    EXPECT_EQ(product.kind, NestKind::Contraction);
    EXPECT_EQ(product.roots, values(g, {"z"}));
    EXPECT_EQ(product.epilogue, values(g, {"h"}));
    EXPECT_EQ(product.stridedOperands, std::vector<bool>(2, strided));
    EXPECT_EQ(kernel.nests.back().kind, NestKind::Elementwise);
    // The stored weight's rows are no rows of the product: one thread.
    EXPECT_EQ(kernel.rowParallel, strided);
    EXPECT_NE(fusionReport(g, plan, planBuffers(g, plan)).find("with epilogue %h on its tile"),
              std::string::npos);
    expectSameResults(g, plan, 41);
  }
}

// An optimizer-sized epilogue (several full-size tensors streamed) runs on
// the register tile too: each tensor is read once either way, and the
// product is neither stored nor read back.
TEST(FusionKernelPlan, HeavyEpilogueRunsOnTheTile) {
  Graph g = parseGraph(R"(graph heavy {
    input %x : f32[32,64]
    input %w : f32[64,16]
    input %a : f32[32,16]
    input %c : f32[32,16]
    input %d : f32[32,16]
    %z = matmul(%x, %w)
    %s = add(%z, %a)
    %t = mul(%s, %c)
    %u = sub(%t, %d)
    output u = %u
  })", "heavy.sg");
  FusionPlan plan = planFusion(g);
  ASSERT_EQ(plan.groups.size(), 1u) << fusionReport(g, plan, planBuffers(g, plan));
  planKernels(g, plan, readsInPlace(true));
  checkKernelPlan(g, plan.groups[0]);
  ASSERT_EQ(plan.groups[0].kernel.nests.size(), 2u);
  EXPECT_EQ(plan.groups[0].kernel.nests[0].epilogue, values(g, {"u"}));
  expectSameResults(g, plan, 42);
}

TEST(FusionKernelPlan, SoftmaxRunsItsReductionsThenItsRowsElementwise) {
  Graph g = parseGraph(R"(graph softmax {
    input %x : f32[9,33]
    %m = reduce_max(%x) {axes=[1], keepdims=1}
    %d = sub(%x, %m)
    %e = exp(%d)
    %s = reduce_sum(%e) {axes=[1], keepdims=1}
    %p = div(%e, %s)
    output p = %p
  })", "softmax.sg");
  FusionPlan plan;
  ASSERT_NO_FATAL_FAILURE(planOneKernel(g, FusionKind::Reduction, plan));
  const KernelPlan &kernel = plan.groups[0].kernel;
  EXPECT_EQ(kernel.roots, values(g, {"m", "s", "p"}));
  ASSERT_EQ(kernel.nests.size(), 3u);
  EXPECT_EQ(kernel.nests[0].kind, NestKind::Reduction);
  EXPECT_EQ(kernel.nests[1].kind, NestKind::Reduction);
  EXPECT_EQ(kernel.nests[2].kind, NestKind::Elementwise);
  // Each row reduces only its own elements: threads split the rows.
  EXPECT_TRUE(kernel.rowParallel);
  expectSameResults(g, plan, 43);

  // Reduced over the rows, it reads across them: one thread.
  Graph columns = parseGraph(R"(graph columns {
    input %x : f32[9,33]
    %s = reduce_sum(%x) {axes=[0], keepdims=1}
    %p = div(%x, %s)
    output p = %p
  })", "columns.sg");
  FusionPlan columnPlan = planFusion(columns);
  ASSERT_EQ(columnPlan.groups.size(), 1u);
  planKernels(columns, columnPlan, readsInPlace(true));
  EXPECT_FALSE(columnPlan.groups[0].kernel.rowParallel);
  expectSameResults(columns, columnPlan, 44);
}

// On a target with column kernels (the CPU), a reduction over the leading
// axes and the roots after it that end in its columns are one Columns nest
// whose threads split the columns. A kernel whose root reads the reduced
// value at other columns (a transpose; fusion forms no such kernel, so it
// is built by hand here) is none: its threads would read columns others
// write.
TEST(FusionKernelPlan, LeadingAxesReductionIsOneColumnsNest) {
  KernelTarget target = readsInPlace(true);
  target.columnKernels = true;
  Graph g = parseGraph(R"(graph bias_moment {
    input %g : f32[4,6,33]
    input %m : f32[33]
    %s = reduce_sum(%g) {axes=[0,1], keepdims=1}
    %r = reshape(%s) {shape=[33]}
    %c = constant() {dtype=f32, shape=[], value=0.9}
    %mc = mul(%m, %c)
    %m2 = add(%mc, %r)
    %q = mul(%g, %s)
    output m2 = %m2
    output q = %q
  })", "bias_moment.sg");
  FusionPlan plan = planFusion(g);
  ASSERT_EQ(plan.groups.size(), 1u) << fusionReport(g, plan, planBuffers(g, plan));
  planKernels(g, plan, target);
  const KernelPlan &kernel = plan.groups[0].kernel;
  EXPECT_EQ(kernel.roots, values(g, {"s", "m2", "q"}));
  ASSERT_EQ(kernel.nests.size(), 1u);
  EXPECT_EQ(kernel.nests[0].kind, NestKind::Columns);
  EXPECT_EQ(kernel.nests[0].roots, kernel.roots);
  EXPECT_TRUE(kernel.rowParallel);
  expectSameResults(g, plan, 46);

  Graph across = parseGraph(R"(graph across {
    input %x : f32[5,4,4]
    %s = reduce_sum(%x) {axes=[0], keepdims=0}
    %t = transpose(%s) {perm=[1,0]}
    %f = neg(%t)
    output f = %f
  })", "across.sg");
  FusionGroup group;
  group.name = "k0_reduce_sum_transpose_neg";
  group.kind = FusionKind::Reduction;
  group.nodes = values(across, {"s", "t", "f"});
  group.inputs = values(across, {"x"});
  group.outputs = values(across, {"f"});
  group.hero = static_cast<int64_t>(group.nodes.front());
  std::vector<bool> usedOutside(across.size(), false);
  usedOutside[group.outputs.front()] = true;
  KernelPlan acrossPlan = planKernel(across, group, usedOutside, target);
  for (const LoopNest &nest : acrossPlan.nests)
    EXPECT_NE(nest.kind, NestKind::Columns);
  EXPECT_FALSE(acrossPlan.rowParallel);
}

TEST(FusionKernelPlan, AttentionIsOneNestStoringItsOutput) {
  Graph g = snippetGraph(kSnippets, "attention");
  FusionPlan plan;
  ASSERT_NO_FATAL_FAILURE(planOneKernel(g, FusionKind::Attention, plan));
  const KernelPlan &kernel = plan.groups[0].kernel;
  EXPECT_EQ(kernel.roots, values(g, {"o"}));
  ASSERT_EQ(kernel.nests.size(), 1u);
  EXPECT_EQ(kernel.nests[0].kind, NestKind::Attention);
  EXPECT_EQ(kernel.nests[0].roots, values(g, {"o"}));
  EXPECT_TRUE(kernel.rowParallel);
  expectSameResults(g, plan, 45);
}

// Every example's kernels, for both kinds of target, have plans of that
// structure.
TEST(FusionKernelPlan, EveryExampleKernelIsPlanned) {
  for (const Case &c : exampleCases())
    for (bool strided : {true, false}) {
      SCOPED_TRACE(fmt::format("{} ({})", c.name, strided ? "strided" : "row-major"));
      FusionPlan plan = planFusion(c.graph);
      planKernels(c.graph, plan, readsInPlace(strided));
      for (const FusionGroup &group : plan.groups) {
        EXPECT_FALSE(group.kernel.nests.empty()) << group.name;
        checkKernelPlan(c.graph, group);
      }
    }
}

} // namespace
} // namespace stepc
