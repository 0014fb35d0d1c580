// The pass manager: verification between passes, stats, hooks, pass names.
#include "stepc/passes.h"

#include "testing.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

using namespace stepc;
using namespace stepc::testing;
using ::testing::HasSubstr;

namespace {

// Points the last node's first operand at the node itself: not topological.
class BreakingPass final : public Pass {
public:
  std::string_view name() const override { return "breaker"; }
  bool run(Graph &graph) override {
    Node &last = graph.nodes.back();
    last.operands[0] = static_cast<ValueId>(graph.size() - 1);
    return true;
  }
};

TEST(PassManager, VerificationFailureNamesThePass) {
  Graph g = parseSnippet(R"(graph g {
    input %x : f32[3]
    %a = exp(%x)
    output a = %a
  })");
  PassManager manager;
  manager.add("dce");
  manager.add(std::make_unique<BreakingPass>());
  manager.add("cse");
  std::string message = errorOf([&] { manager.run(g); });
  EXPECT_THAT(message, HasSubstr("pass 'breaker' produced an invalid graph"));
  EXPECT_THAT(message, HasSubstr("test.sg:3:5")); // and the node it broke
}

TEST(PassManager, StatsAndAfterEachHook) {
  Graph g = parseSnippet(R"(graph g {
    input %x : f32[3]
    %one = constant() {dtype=f32, shape=[], value=1.0}
    %a = mul(%x, %one)
    %b = exp(%a)
    %c = exp(%x)
    %d = add(%b, %c)
    %dead = neg(%d)
    output d = %d
  })");
  PassManager manager;
  for (std::string_view name : {"simplify", "fold", "cse", "dce"})
    manager.add(name);
  std::vector<std::string> seen;
  manager.setAfterEach([&](std::string_view pass, const Graph &graph) {
    seen.push_back(std::string(pass) + ":" + std::to_string(graph.size()));
  });
  std::vector<PassStats> stats = manager.run(g);
  ASSERT_EQ(stats.size(), 4u);
  EXPECT_EQ(seen, (std::vector<std::string>{"simplify:5", "fold:5", "cse:4", "dce:3"}));
  EXPECT_EQ(stats[0].pass, "simplify");
  EXPECT_EQ(stats[0].nodesBefore, 7u);
  EXPECT_EQ(stats[0].nodesAfter, 5u);
  EXPECT_TRUE(stats[0].changed);
  EXPECT_FALSE(stats[1].changed);
  EXPECT_EQ(stats[1].nodesBefore, stats[1].nodesAfter);
  EXPECT_TRUE(stats[2].changed);
  EXPECT_EQ(stats[3].nodesAfter, 3u);
  for (const PassStats &s : stats)
    EXPECT_GE(s.milliseconds, 0.0);
}

TEST(PassManager, UnknownPassListsTheKnownOnes) {
  std::string message = errorOf([&] { createPass("inline"); });
  EXPECT_THAT(message, HasSubstr("unknown pass 'inline'"));
  for (std::string_view name : passNames())
    EXPECT_THAT(message, HasSubstr(std::string(name)));
}

TEST(PassManager, EveryPipelinePassExists) {
  for (bool training : {false, true})
    for (const std::string &name : defaultPipeline(training))
      EXPECT_EQ(createPass(name)->name(), name);
  EXPECT_EQ(passNames().size(), 4u);
}

TEST(PassManager, RejectsABadInputBeforeAnyPass) {
  Graph g = parseSnippet(R"(graph g {
    input %x : f32[3]
    output x = %x
  })");
  g.outputs.clear();
  PassManager manager;
  manager.add("dce");
  std::string message = errorOf([&] { manager.run(g); });
  EXPECT_THAT(message, HasSubstr("has no outputs"));
  EXPECT_THAT(message, ::testing::Not(HasSubstr("pass 'dce'")));
}

} // namespace
