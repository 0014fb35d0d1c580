// Valid .sg texts shared by the text-format tests and the parser fuzzer (which
// mutates them), in tests/sg_corpus/. Together they use every op, every
// initializer, every kind of attribute value and every composite:
// - every_op.sg: every primitive op, with odd spacing and comments on purpose;
// - composites.sg: every composite; they expand into primitive ops;
// - step.sg: a training step: params take new values after the step;
// - canonical.sg: a small MLP in the form printGraph writes;
// - embedding.sg: an embedding model for the index checks: gather (and, in
//   its training step, its gradient scatter_add) and cross_entropy's checked
//   labels.
#pragma once

#include "testing.h"

#include <string>
#include <string_view>

namespace stepc::testing {

// tests/sg_corpus/NAME.sg, byte for byte.
inline std::string corpusText(std::string_view name) {
  return readSourceFile("tests/sg_corpus/" + std::string(name) + ".sg");
}

} // namespace stepc::testing
