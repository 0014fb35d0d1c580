// The graph surgery under the passes (compiler/passes/rewrite.h): compact
// and replaceAllUses.
#include "rewrite.h"

#include "stepc/passes.h"
#include "stepc/text.h"

#include "testing.h"

#include <gtest/gtest.h>

using namespace stepc;
using namespace stepc::testing;

namespace {

// The graphs of some tests, as .sg text.
const std::string kSnippets = "tests/snippets/rewrite.sg";

TEST(Rewrite, CompactRenumbersOperandsOutputsAndUpdates) {
  Graph g = parseSnippet(R"(graph g {
    input %x : f32[3]
    %dead = exp(%x)
    param %w : f32[3] = zeros()
    %a = add(%x, %w)
    %also_dead = neg(%a)
    %b = mul(%a, %a)
    output b = %b
    update %w = %a
  })");
  compact(g, {true, false, false, true, false, true});
  EXPECT_EQ(printGraph(g), printGraph(parseSnippet(R"(graph g {
    input %x : f32[3]
    param %w : f32[3] = zeros()
    %a = add(%x, %w)
    %b = mul(%a, %a)
    output b = %b
    update %w = %a
  })")));
  EXPECT_EQ(g.node(2).loc.str(), "test.sg:5:5");
  EXPECT_NO_THROW(verify(g));
}

// findNamed goes through the graph's name index: after nodes are dropped and
// renumbered, and after CSE moves a name to the surviving node, it must find
// each name at its new place and no longer find dropped names.
TEST(Rewrite, NameLookupFollowsCompactAndCse) {
  Graph g = parseSnippet(R"(graph g {
    input %x : f32[3]
    %dead = exp(%x)
    %a = neg(%x)
    %b = mul(%a, %a)
    output b = %b
  })");
  compact(g, {true, false, true, true});
  EXPECT_EQ(g.findNamed("a"), ValueId(1));
  EXPECT_EQ(g.findNamed("b"), ValueId(2));
  EXPECT_EQ(g.findNamed("dead"), std::nullopt);

  Graph h = parseSnippet(R"(graph g {
    input %x : f32[3]
    %1 = exp(%x)
    %named = exp(%x)
    %t = add(%named, %1)
    output t = %t
  })");
  EXPECT_EQ(h.findNamed("named"), ValueId(2));
  EXPECT_TRUE(createPass("cse")->run(h));
  EXPECT_EQ(h.findNamed("named"), ValueId(1));
  EXPECT_EQ(h.findNamed("t"), ValueId(2));
  EXPECT_THROW(h.add(Node{OpKind::Neg, {0}, {}, {}, "named"}), Error);
}

TEST(Rewrite, CompactRefusesToDropAUsedNode) {
  Graph g = parseSnippet(R"(graph g {
    input %x : f32[3]
    %a = exp(%x)
    %b = neg(%a)
    output b = %b
  })");
  Graph copy = g;
  EXPECT_THROW(compact(g, {true, false, true}), std::logic_error);
  EXPECT_TRUE(g == copy); // refused before changing anything
  EXPECT_THROW(compact(g, {true, true, false}), std::logic_error); // an output
}

TEST(Rewrite, ReplaceAllUsesCoversOutputsAndUpdates) {
  Graph g = parseSnippet(R"(graph g {
    input %x : f32[3]
    param %w : f32[3] = zeros()
    %a = add(%x, %w)
    %b = add(%x, %w)
    %c = mul(%b, %b)
    output b = %b
    output c = %c
    update %w = %b
  })");
  replaceAllUses(g, 3, 2);
  EXPECT_EQ(g.node(4).operands, (std::vector<ValueId>{2, 2}));
  EXPECT_EQ(g.outputs[0].value, 2u);
  EXPECT_EQ(g.updates[0].value, 2u);
  EXPECT_NO_THROW(verify(g));
}

TEST(Rewrite, ReplaceAllUsesKeepsOrderAndTypes) {
  Graph g = snippetGraph(kSnippets, "exp_neg_tanh_sum");
  Graph copy = g;
  // %c comes after %b, a user of %a.
  EXPECT_THROW(replaceAllUses(g, 1, 3), std::logic_error);
  // Different types.
  EXPECT_THROW(replaceAllUses(g, 1, 4), std::logic_error);
  EXPECT_TRUE(g == copy);
}

} // namespace
