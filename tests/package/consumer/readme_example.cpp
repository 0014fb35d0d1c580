// The README's "A graph in C++" example, as another project builds it
// against the installed package (stepc::compiler): the graph is built,
// interpreted, compiled through MLIR/LLVM, and both losses must agree.
#include "stepc/builder.h"
#include "stepc/compile.h"
#include "stepc/interpreter.h"

#include <cmath>
#include <cstdio>

int main() {
  // --- the README's code, unchanged ---
  stepc::GraphBuilder b("mlp");
  auto x  = b.input("x", stepc::DType::F32, {128, 784});
  auto y  = b.input("y", stepc::DType::I32, {128});
  auto w1 = b.param("w1", stepc::DType::F32, {784, 512}, stepc::Init::heUniform(1));
  auto b1 = b.param("b1", stepc::DType::F32, {512}, stepc::Init::zeros());
  auto w2 = b.param("w2", stepc::DType::F32, {512, 10}, stepc::Init::xavierUniform(2));
  auto h = relu(matmul(x, w1) + b1);
  b.output("loss", crossEntropy(matmul(h, w2), y));
  stepc::Graph g = b.finish();
  // --- end of the README's code ---

  stepc::TensorMap inputs = stepc::randomInputs(g, 7);
  double interpreted = stepc::interpret(g, inputs, stepc::initialParams(g)).at("loss").real(0);
  auto compiled = stepc::compileJit(g, {.cache = false});
  double jitted = compiled->step(inputs).at("loss").real(0);
  std::printf("loss: interpreter %.6f, compiled %.6f\n", interpreted, jitted);
  if (!(std::fabs(interpreted - jitted) <= 1e-4 * std::fabs(interpreted))) {
    std::fprintf(stderr, "the compiled loss differs from the interpreter's\n");
    return 1;
  }
  return 0;
}
