// The CPU backend against the reference interpreter on configurations drawn
// at realistic sizes, and the regressions such sizes have found.
#include "codegen_harness.h"

#include "stepc/interpreter.h"
#include "stepc/text.h"
#include "stepc/train.h"

#include <gtest/gtest.h>

using namespace stepc;
using stepc::testing::expectMatchesInterpreter;

namespace {

// --- Regressions -----------------------------------------------------------------

// Issue 12: the conv net's SGD step crashed (stack overflow): the im2col
// buffer (576 x 256 floats) was allocated anew on the stack for each of the
// 16 samples, 9 MB in all. Batch 8 or 32 channels stayed under 8 MB.
TEST(ShapeSweepRegression, ConvNetTrainStepWithLargeIm2colBuffer) {
  Graph model = parseGraph(R"(
    graph t {
      input %x : f32[16,64,16,16]
      input %y : i32[16]
      param %w3 : f32[64,64,3,3] = he_normal(seed=3)
      param %wf : f32[16384,10] = xavier_uniform(seed=4)
      %c3 = conv2d(%x, %w3) {stride=[1,1], padding=[1,1], dilation=[1,1], groups=1}
      %f = reshape(%c3) {shape=[16,16384]}
      %logits = matmul(%f, %wf)
      %loss = cross_entropy(%logits, %y)
      output loss = %loss
    })");
  Graph step = trainStep(model, "loss", Optimizer::sgd());
  TensorMap inputs = randomInputs(step, 12);
  inputs.at("lr") = Tensor::scalar(DType::F32, 0.01);
  expectMatchesInterpreter(step, inputs, initialParams(step));
}

} // namespace
