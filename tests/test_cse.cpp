// The cse pass: identical nodes merge. Its cases are rewrites, in
// tests/snippets/cse.sg (testing.h says how pass tests check results).
#include "testing.h"

using namespace stepc::testing;

namespace {

const bool registered = registerRewriteTests("Cse", {"cse"}, "tests/snippets/cse.sg");

} // namespace
