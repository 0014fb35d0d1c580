// The shape and dtype rule of every op (compiler/ir/shape_rules.cpp), table
// driven: for each op in ops.def at least one valid case with its exact result
// type and at least one error case with its message. A completeness test walks
// allOps(), so an op added to ops.def fails here until it has both. Then the
// gradient ops against their forward ops, the window-size formula against
// PyTorch's, arity errors from Graph::add, and where errors say they come
// from: the C++ call site of a builder call or operator, or a node's SourceLoc.
#include "stepc/builder.h"
#include "stepc/graph.h"
#include "testing.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <string>
#include <vector>

using namespace stepc;
using stepc::testing::errorOf;
using ::testing::AllOf;
using ::testing::ContainsRegex;
using ::testing::EndsWith;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

namespace {

// --- Types and attribute values -----------------------------------------

TensorType f32(Shape s) { return {DType::F32, std::move(s)}; }
TensorType f64(Shape s) { return {DType::F64, std::move(s)}; }
TensorType i32(Shape s) { return {DType::I32, std::move(s)}; }
TensorType i64(Shape s) { return {DType::I64, std::move(s)}; }
TensorType b8(Shape s) { return {DType::Bool, std::move(s)}; }

// An int literal converts equally well to int64_t and double, so spell out
// which attribute kind is meant.
AttrValue Int(int64_t v) { return v; }
AttrValue Real(double v) { return v; }
AttrValue Ints(std::vector<int64_t> v) { return v; }
AttrValue Reals(std::vector<double> v) { return v; }
AttrValue Str(std::string v) { return v; }

constexpr int64_t k2to32 = int64_t(1) << 32;
constexpr int64_t k2to62 = int64_t(1) << 62;

Attrs with(Attrs attrs, std::string name, AttrValue value) {
  attrs.set(std::move(name), std::move(value));
  return attrs;
}

Attrs without(const Attrs &attrs, std::string_view name) {
  Attrs out;
  for (const auto &[n, v] : attrs.entries())
    if (n != name)
      out.set(n, v);
  return out;
}

Attrs typeAttrs(std::string dtype, std::vector<int64_t> shape) {
  return {{"dtype", Str(std::move(dtype))}, {"shape", Ints(std::move(shape))}};
}

Attrs paramAttrs(const Init &init, std::string dtype, std::vector<int64_t> shape) {
  Attrs a = init.toAttrs();
  a.set("dtype", Str(std::move(dtype)));
  a.set("shape", Ints(std::move(shape)));
  return a;
}

Attrs reduceAttrs(std::vector<int64_t> axes, int64_t keepdims) {
  return {{"axes", Ints(std::move(axes))}, {"keepdims", Int(keepdims)}};
}

Attrs sliceAttrs(std::vector<int64_t> starts, std::vector<int64_t> limits,
                 std::vector<int64_t> strides) {
  return {{"starts", Ints(std::move(starts))},
          {"limits", Ints(std::move(limits))},
          {"strides", Ints(std::move(strides))}};
}

Attrs padAttrs(std::vector<int64_t> low, std::vector<int64_t> high) {
  return {{"low", Ints(std::move(low))}, {"high", Ints(std::move(high))}, {"value", Real(0)}};
}

Attrs convAttrs(std::vector<int64_t> stride, std::vector<int64_t> padding,
                std::vector<int64_t> dilation, int64_t groups) {
  return {{"stride", Ints(std::move(stride))},
          {"padding", Ints(std::move(padding))},
          {"dilation", Ints(std::move(dilation))},
          {"groups", Int(groups)}};
}

Attrs poolAttrs(std::vector<int64_t> kernel, std::vector<int64_t> stride,
                std::vector<int64_t> padding) {
  return {{"kernel", Ints(std::move(kernel))},
          {"stride", Ints(std::move(stride))},
          {"padding", Ints(std::move(padding))}};
}

Attrs avgPoolAttrs(std::vector<int64_t> kernel, std::vector<int64_t> stride,
                   std::vector<int64_t> padding, int64_t countIncludePad) {
  return with(poolAttrs(std::move(kernel), std::move(stride), std::move(padding)),
              "count_include_pad", Int(countIncludePad));
}

// --- The tables -----------------------------------------------------------

struct ValidCase {
  std::string label;
  OpKind op;
  std::vector<TensorType> operands;
  Attrs attrs;
  TensorType expected;
};

struct ErrorCase {
  std::string label;
  OpKind op;
  std::vector<TensorType> operands;
  Attrs attrs;
  // Substrings of the message after its "<op>: " prefix (checked separately).
  std::vector<std::string> expected;
};

const std::vector<OpKind> kUnaryNumeric = {OpKind::Neg, OpKind::Abs, OpKind::Square, OpKind::Relu,
                                           OpKind::Sign};
const std::vector<OpKind> kUnaryFloat = {OpKind::Exp,   OpKind::Log,  OpKind::Sqrt,
                                         OpKind::Rsqrt, OpKind::Tanh, OpKind::Sigmoid,
                                         OpKind::Sin,   OpKind::Cos,  OpKind::Erf};
const std::vector<OpKind> kArithmetic = {OpKind::Add,     OpKind::Sub,     OpKind::Mul, OpKind::Div,
                                         OpKind::Maximum, OpKind::Minimum, OpKind::Rem};
const std::vector<OpKind> kEquality = {OpKind::Eq, OpKind::Ne};
const std::vector<OpKind> kOrdered = {OpKind::Lt, OpKind::Le, OpKind::Gt, OpKind::Ge};
const std::vector<OpKind> kReduce = {OpKind::ReduceSum, OpKind::ReduceMean, OpKind::ReduceMax,
                                     OpKind::ReduceMin};

std::vector<ValidCase> validCases() {
  std::vector<ValidCase> v;
  auto add = [&](std::string label, OpKind op, std::vector<TensorType> in, Attrs attrs,
                 TensorType expected) {
    v.push_back({std::move(label), op, std::move(in), std::move(attrs), std::move(expected)});
  };
  using K = OpKind;

  // Sources: the type comes from the attributes.
  add("input", K::Input, {}, typeAttrs("f32", {2, 3}), f32({2, 3}));
  add("input scalar bool", K::Input, {}, typeAttrs("bool", {}), b8({}));
  add("input empty axis", K::Input, {}, typeAttrs("i64", {0, 5}), i64({0, 5}));
  add("param zeros", K::Parameter, {}, paramAttrs(Init::zeros(), "f32", {4}), f32({4}));
  add("param normal", K::Parameter, {}, paramAttrs(Init::normal(0, 0.02, 7), "f64", {3, 4}),
      f64({3, 4}));
  add("param he_uniform", K::Parameter, {}, paramAttrs(Init::heUniform(1), "f32", {784, 512}),
      f32({784, 512}));
  add("param uniform", K::Parameter, {}, paramAttrs(Init::uniform(-1, 1, 3), "f32", {}), f32({}));
  add("constant fill", K::Constant, {}, with(typeAttrs("f32", {2, 2}), "value", Real(1.5)),
      f32({2, 2}));
  add("constant integer fill", K::Constant, {}, with(typeAttrs("i64", {}), "value", Int(7)),
      i64({}));
  add("constant data", K::Constant, {}, with(typeAttrs("i32", {3}), "data", Reals({1, 2, 3})),
      i32({3}));
  add("constant empty data", K::Constant, {}, with(typeAttrs("f32", {0, 2}), "data", Ints({})),
      f32({0, 2}));
  add("iota", K::Iota, {}, with(typeAttrs("i64", {3, 4}), "axis", Int(1)), i64({3, 4}));
  add("iota negative axis", K::Iota, {}, with(typeAttrs("f32", {5}), "axis", Int(-1)), f32({5}));

  // Elementwise unary: same type out.
  for (OpKind op : kUnaryNumeric) {
    std::string name(opInfo(op).name);
    add(name + " f32", op, {f32({2, 3})}, {}, f32({2, 3}));
    add(name + " i32", op, {i32({4})}, {}, i32({4}));
    add(name + " f64 scalar", op, {f64({})}, {}, f64({}));
  }
  for (OpKind op : kUnaryFloat) {
    std::string name(opInfo(op).name);
    add(name + " f32", op, {f32({2, 3})}, {}, f32({2, 3}));
    add(name + " f64 empty", op, {f64({0, 4})}, {}, f64({0, 4}));
  }
  add("cast f32->i64", K::Cast, {f32({2, 3})}, {{"dtype", Str("i64")}}, i64({2, 3}));
  add("cast bool->f32", K::Cast, {b8({4})}, {{"dtype", Str("f32")}}, f32({4}));
  add("cast f64->bool scalar", K::Cast, {f64({})}, {{"dtype", Str("bool")}}, b8({}));
  add("cast to same dtype", K::Cast, {i32({1, 2})}, {{"dtype", Str("i32")}}, i32({1, 2}));

  // Elementwise binary: NumPy broadcasting.
  for (OpKind op : kArithmetic) {
    std::string name(opInfo(op).name);
    add(name + " [3,1]x[1,4]", op, {f32({3, 1}), f32({1, 4})}, {}, f32({3, 4}));
    add(name + " []x[2,3]", op, {f32({}), f32({2, 3})}, {}, f32({2, 3}));
    add(name + " [2,3]x[]", op, {f32({2, 3}), f32({})}, {}, f32({2, 3}));
    add(name + " [2,1,4]x[3,1]", op, {f32({2, 1, 4}), f32({3, 1})}, {}, f32({2, 3, 4}));
    add(name + " [0,3]x[1,3]", op, {f32({0, 3}), f32({1, 3})}, {}, f32({0, 3}));
    add(name + " [1]x[0]", op, {f64({1}), f64({0})}, {}, f64({0}));
    add(name + " i32", op, {i32({5}), i32({5})}, {}, i32({5}));
  }
  add("pow broadcast", K::Pow, {f32({2, 1}), f32({3})}, {}, f32({2, 3}));
  add("pow f64 scalar", K::Pow, {f64({}), f64({})}, {}, f64({}));
  for (OpKind op : kEquality) {
    std::string name(opInfo(op).name);
    add(name + " f32 broadcast", op, {f32({3, 1}), f32({4})}, {}, b8({3, 4}));
    add(name + " bool", op, {b8({2}), b8({2})}, {}, b8({2}));
    add(name + " i64 scalar", op, {i64({}), i64({5})}, {}, b8({5}));
  }
  for (OpKind op : kOrdered) {
    std::string name(opInfo(op).name);
    add(name + " f32 broadcast", op, {f32({3, 1}), f32({4})}, {}, b8({3, 4}));
    add(name + " i32", op, {i32({2, 2}), i32({2, 2})}, {}, b8({2, 2}));
  }
  add("select 3-way broadcast", K::Select, {b8({3, 1, 1}), f32({1, 4, 1}), f32({5})}, {},
      f32({3, 4, 5}));
  add("select scalar cond", K::Select, {b8({}), i32({2}), i32({2})}, {}, i32({2}));
  add("select scalar values", K::Select, {b8({2, 3}), f64({}), f64({})}, {}, f64({2, 3}));
  add("select bool values", K::Select, {b8({4}), b8({4}), b8({1})}, {}, b8({4}));

  // Reductions.
  for (OpKind op : kReduce) {
    std::string name(opInfo(op).name);
    add(name + " axes [-1,0]", op, {f32({2, 3, 4})}, reduceAttrs({-1, 0}, 0), f32({3}));
    add(name + " axes [-1,0] keepdims", op, {f32({2, 3, 4})}, reduceAttrs({-1, 0}, 1),
        f32({1, 3, 1}));
    add(name + " axes [1]", op, {f32({2, 3, 4})}, reduceAttrs({1}, 0), f32({2, 4}));
    add(name + " all axes", op, {f64({2, 3, 4})}, reduceAttrs({0, 1, 2}, 0), f64({}));
    add(name + " all axes keepdims", op, {f64({2, 3, 4})}, reduceAttrs({2, 0, 1}, 1),
        f64({1, 1, 1}));
    // The node's axes are literal: empty reduces nothing (the builder's
    // sum(x) fills in every axis).
    add(name + " no axes", op, {f32({2, 3})}, reduceAttrs({}, 0), f32({2, 3}));
    add(name + " scalar", op, {f32({})}, reduceAttrs({}, 1), f32({}));
    add(name + " empty axis", op, {f32({0, 5})}, reduceAttrs({0}, 0), f32({5}));
  }
  add("reduce_sum i32", K::ReduceSum, {i32({4, 5})}, reduceAttrs({1}, 0), i32({4}));
  add("reduce_max i64", K::ReduceMax, {i64({4, 5})}, reduceAttrs({-2}, 1), i64({1, 5}));
  add("reduce_min i32", K::ReduceMin, {i32({4, 5})}, reduceAttrs({0, 1}, 0), i32({}));
  add("argmax", K::ArgMax, {f32({2, 3, 4})}, {{"axis", Int(1)}, {"keepdims", Int(0)}}, i64({2, 4}));
  add("argmax keepdims negative axis", K::ArgMax, {f32({2, 3, 4})},
      {{"axis", Int(-1)}, {"keepdims", Int(1)}}, i64({2, 3, 1}));
  add("argmax i32 vector", K::ArgMax, {i32({5})}, {{"axis", Int(0)}, {"keepdims", Int(0)}},
      i64({}));

  // Linear algebra and data movement.
  add("matmul", K::MatMul, {f32({2, 3}), f32({3, 4})}, {}, f32({2, 4}));
  add("matmul batched broadcast", K::MatMul, {f32({2, 1, 3, 4}), f32({5, 4, 6})}, {},
      f32({2, 5, 3, 6}));
  add("matmul rank 2 x rank 3", K::MatMul, {f32({3, 4}), f32({2, 4, 5})}, {}, f32({2, 3, 5}));
  add("matmul batch 1 broadcast", K::MatMul, {f64({7, 2, 3}), f64({1, 3, 4})}, {}, f64({7, 2, 4}));
  add("matmul i32", K::MatMul, {i32({2, 3}), i32({3, 1})}, {}, i32({2, 1}));
  add("matmul empty rows", K::MatMul, {f32({0, 3}), f32({3, 4})}, {}, f32({0, 4}));
  add("matmul empty inner", K::MatMul, {f32({2, 0}), f32({0, 4})}, {}, f32({2, 4}));
  add("transpose", K::Transpose, {f32({2, 3, 4})}, {{"perm", Ints({2, 0, 1})}}, f32({4, 2, 3}));
  add("transpose scalar", K::Transpose, {f32({})}, {{"perm", Ints({})}}, f32({}));
  add("transpose i64", K::Transpose, {i64({5, 6})}, {{"perm", Ints({1, 0})}}, i64({6, 5}));
  add("reshape -1 first", K::Reshape, {f32({2, 3, 4})}, {{"shape", Ints({-1, 4})}}, f32({6, 4}));
  add("reshape -1 middle", K::Reshape, {f32({2, 3, 4})}, {{"shape", Ints({4, -1, 3})}},
      f32({4, 2, 3}));
  add("reshape flat", K::Reshape, {i32({2, 3, 4})}, {{"shape", Ints({24})}}, i32({24}));
  add("reshape scalar up", K::Reshape, {f32({})}, {{"shape", Ints({1, 1})}}, f32({1, 1}));
  add("reshape to scalar", K::Reshape, {f32({1, 1})}, {{"shape", Ints({})}}, f32({}));
  add("reshape empty -1", K::Reshape, {f32({0, 3})}, {{"shape", Ints({-1, 3})}}, f32({0, 3}));
  add("reshape empty", K::Reshape, {f32({0, 3})}, {{"shape", Ints({3, 0, 5})}}, f32({3, 0, 5}));
  add("broadcast_to", K::BroadcastTo, {f32({3, 1})}, {{"shape", Ints({2, 3, 4})}}, f32({2, 3, 4}));
  add("broadcast_to scalar", K::BroadcastTo, {f32({})}, {{"shape", Ints({5})}}, f32({5}));
  add("broadcast_to 1->0", K::BroadcastTo, {i32({1})}, {{"shape", Ints({0})}}, i32({0}));
  add("broadcast_to same", K::BroadcastTo, {f32({2, 3})}, {{"shape", Ints({2, 3})}}, f32({2, 3}));
  add("slice strided (ceil division)", K::Slice, {f32({10, 5})}, sliceAttrs({1, 0}, {8, 5}, {3, 2}),
      f32({3, 3}));
  add("slice strided exact", K::Slice, {f32({10, 5})}, sliceAttrs({0, 0}, {10, 5}, {4, 5}),
      f32({3, 1}));
  add("slice empty", K::Slice, {f32({10, 5})}, sliceAttrs({2, 0}, {2, 5}, {1, 1}), f32({0, 5}));
  add("slice stride beyond range", K::Slice, {i64({4})}, sliceAttrs({1}, {2}, {7}), i64({1}));
  add("slice scalar", K::Slice, {f32({})}, sliceAttrs({}, {}, {}), f32({}));
  add("concat axis 0", K::Concat, {f32({2, 3}), f32({4, 3})}, {{"axis", Int(0)}}, f32({6, 3}));
  add("concat three, axis -1", K::Concat, {f32({2, 3}), f32({2, 1}), f32({2, 2})},
      {{"axis", Int(-1)}}, f32({2, 6}));
  add("concat one operand", K::Concat, {i32({5})}, {{"axis", Int(0)}}, i32({5}));
  add("concat with empty", K::Concat, {f32({0, 3}), f32({2, 3})}, {{"axis", Int(0)}}, f32({2, 3}));
  add("pad", K::Pad, {f32({2, 3})}, padAttrs({1, 0}, {0, 2}), f32({3, 5}));
  // Interior padding puts interior[i] elements between neighbours: d + (d-1)*interior.
  add("pad interior", K::Pad, {f32({2, 3})},
      with(padAttrs({1, 0}, {0, 2}), "interior", Ints({1, 2})), f32({4, 9}));
  add("pad interior of empty axis", K::Pad, {i32({0})},
      with(padAttrs({1}, {2}), "interior", Ints({3})), i32({3}));
  add("pad scalar", K::Pad, {f32({})}, padAttrs({}, {}), f32({}));
  add("gather axis 1, 2-D indices", K::Gather, {f32({5, 6, 7}), i32({2, 3})}, {{"axis", Int(1)}},
      f32({5, 2, 3, 7}));
  add("gather axis -1", K::Gather, {f32({5, 6, 7}), i64({4})}, {{"axis", Int(-1)}}, f32({5, 6, 4}));
  add("gather scalar index", K::Gather, {f32({5, 6, 7}), i64({})}, {{"axis", Int(0)}}, f32({6, 7}));
  add("gather bool data", K::Gather, {b8({4}), i32({2})}, {{"axis", Int(0)}}, b8({2}));
  add("one_hot", K::OneHot, {i32({4})}, {{"depth", Int(10)}, {"dtype", Str("f32")}}, f32({4, 10}));
  add("one_hot 2-D bool depth 1", K::OneHot, {i64({2, 3})},
      {{"depth", Int(1)}, {"dtype", Str("bool")}}, b8({2, 3, 1}));
  add("one_hot scalar", K::OneHot, {i64({})}, {{"depth", Int(3)}, {"dtype", Str("i32")}}, i32({3}));

  // Convolution and pooling: out = floor((H + 2p - d(k-1) - 1) / s) + 1.
  add("conv2d stride 2 padding 2", K::Conv2d, {f32({2, 3, 32, 32}), f32({8, 3, 5, 5})},
      convAttrs({2, 2}, {2, 2}, {1, 1}, 1), f32({2, 8, 16, 16}));
  add("conv2d dilation, groups, uneven stride", K::Conv2d, {f32({1, 4, 10, 12}), f32({6, 2, 3, 3})},
      convAttrs({1, 2}, {0, 1}, {2, 1}, 2), f32({1, 6, 6, 6}));
  add("conv2d depthwise", K::Conv2d, {f64({1, 4, 5, 5}), f64({4, 1, 3, 3})},
      convAttrs({1, 1}, {0, 0}, {1, 1}, 4), f64({1, 4, 3, 3}));
  add("conv2d floor", K::Conv2d, {f32({1, 1, 6, 7}), f32({1, 1, 2, 2})},
      convAttrs({3, 3}, {0, 0}, {1, 1}, 1), f32({1, 1, 2, 2}));
  add("conv2d zero height with padding", K::Conv2d, {f32({1, 1, 0, 3}), f32({1, 1, 1, 1})},
      convAttrs({1, 1}, {1, 1}, {1, 1}, 1), f32({1, 1, 2, 5}));
  add("max_pool2d 2x2", K::MaxPool2d, {f32({1, 3, 8, 8})}, poolAttrs({2, 2}, {2, 2}, {0, 0}),
      f32({1, 3, 4, 4}));
  add("max_pool2d 3x3 s2 p1", K::MaxPool2d, {f32({1, 3, 7, 7})}, poolAttrs({3, 3}, {2, 2}, {1, 1}),
      f32({1, 3, 4, 4}));
  add("max_pool2d 3x1 s1", K::MaxPool2d, {f64({2, 1, 5, 4})}, poolAttrs({3, 1}, {1, 1}, {0, 0}),
      f64({2, 1, 3, 4}));
  add("max_pool2d kernel 2 padding 1", K::MaxPool2d, {f32({1, 1, 3, 3})},
      poolAttrs({2, 2}, {2, 2}, {1, 1}), f32({1, 1, 2, 2}));
  add("avg_pool2d", K::AvgPool2d, {f32({1, 3, 8, 8})}, avgPoolAttrs({2, 2}, {2, 2}, {0, 0}, 1),
      f32({1, 3, 4, 4}));
  add("avg_pool2d excluding pad", K::AvgPool2d, {f32({4, 2, 7, 9})},
      avgPoolAttrs({3, 3}, {2, 3}, {1, 1}, 0), f32({4, 2, 4, 3}));

  // Gradient ops: each returns its forward operand's type (see also the
  // consistency tests below).
  add("scatter_add (gather axis 1, 2-D indices)", K::ScatterAdd, {i32({2, 3}), f32({5, 2, 3, 7})},
      {{"axis", Int(1)}, {"size", Int(6)}}, f32({5, 6, 7}));
  add("scatter_add axis 0", K::ScatterAdd, {i64({4}), f32({4, 3})},
      {{"axis", Int(0)}, {"size", Int(10)}}, f32({10, 3}));
  add("scatter_add scalar index", K::ScatterAdd, {i64({}), f64({6, 7})},
      {{"axis", Int(0)}, {"size", Int(5)}}, f64({5, 6, 7}));
  add("scatter_add size 0", K::ScatterAdd, {i64({0}), f32({0})},
      {{"axis", Int(0)}, {"size", Int(0)}}, f32({0}));
  // The gradients of two forward convolutions: a 5x5 kernel at stride 2 over
  // 32x32 (or 31x31) into 16x16, and 3x3 kernels of 2 groups, strides 1 and
  // 2, padding 0 and 1, dilation 2 and 1.
  const Attrs strided = convAttrs({2, 2}, {2, 2}, {1, 1}, 1);
  const Attrs grouped = convAttrs({1, 2}, {0, 1}, {2, 1}, 2);
  add("conv2d_grad_input", K::Conv2dGradInput, {f32({2, 8, 16, 16}), f32({8, 3, 5, 5})},
      with(strided, "input_hw", Ints({32, 32})), f32({2, 3, 32, 32}));
  // Stride 2 maps 31 and 32 to the same output size: input_hw decides.
  add("conv2d_grad_input odd size", K::Conv2dGradInput, {f32({2, 8, 16, 16}), f32({8, 3, 5, 5})},
      with(strided, "input_hw", Ints({31, 31})), f32({2, 3, 31, 31}));
  add("conv2d_grad_input groups", K::Conv2dGradInput, {f32({1, 6, 6, 6}), f32({6, 2, 3, 3})},
      with(grouped, "input_hw", Ints({10, 12})), f32({1, 4, 10, 12}));
  add("conv2d_grad_input zero height", K::Conv2dGradInput, {f32({1, 1, 2, 5}), f32({1, 1, 1, 1})},
      with(convAttrs({1, 1}, {1, 1}, {1, 1}, 1), "input_hw", Ints({0, 3})), f32({1, 1, 0, 3}));
  add("conv2d_grad_weight", K::Conv2dGradWeight, {f32({2, 3, 32, 32}), f32({2, 8, 16, 16})},
      with(strided, "kernel", Ints({5, 5})), f32({8, 3, 5, 5}));
  add("conv2d_grad_weight groups", K::Conv2dGradWeight, {f64({1, 4, 10, 12}), f64({1, 6, 6, 6})},
      with(grouped, "kernel", Ints({3, 3})), f64({6, 2, 3, 3}));
  add("max_pool2d_grad", K::MaxPool2dGrad, {f32({1, 3, 7, 7}), f32({1, 3, 4, 4})},
      poolAttrs({3, 3}, {2, 2}, {1, 1}), f32({1, 3, 7, 7}));
  add("avg_pool2d_grad", K::AvgPool2dGrad, {f32({1, 3, 4, 4})},
      with(avgPoolAttrs({3, 3}, {2, 2}, {1, 1}, 0), "input_hw", Ints({7, 7})), f32({1, 3, 7, 7}));
  add("avg_pool2d_grad odd size", K::AvgPool2dGrad, {f64({2, 1, 4, 4})},
      with(avgPoolAttrs({2, 2}, {2, 2}, {0, 0}, 1), "input_hw", Ints({9, 8})), f64({2, 1, 9, 8}));

  add("dropout", K::Dropout, {f32({4, 5}), i64({})}, {{"rate", Real(0.5)}}, f32({4, 5}));
  add("dropout rate 0 (integer)", K::Dropout, {f64({3}), i64({})}, {{"rate", Int(0)}}, f64({3}));

  add("all_reduce mean", K::AllReduce, {f32({3, 5})}, {{"reduction", Str("mean")}}, f32({3, 5}));
  add("all_reduce sum i64", K::AllReduce, {i64({7})}, {{"reduction", Str("sum")}}, i64({7}));
  return v;
}

std::vector<ErrorCase> errorCases() {
  std::vector<ErrorCase> v;
  auto add = [&](std::string label, OpKind op, std::vector<TensorType> in, Attrs attrs,
                 std::vector<std::string> expected) {
    v.push_back({std::move(label), op, std::move(in), std::move(attrs), std::move(expected)});
  };
  using K = OpKind;
  const std::string notFloat = "expected a floating-point operand (f32 or f64), found ";
  const std::string notNumeric = "expected a numeric operand, found ";

  // Sources.
  add("input missing dtype", K::Input, {}, {{"shape", Ints({2})}}, {"missing attribute 'dtype'"});
  add("input negative dim", K::Input, {}, typeAttrs("f32", {2, -1}),
      {"shape [2,-1] has a negative dimension"});
  add("input unknown dtype", K::Input, {}, typeAttrs("f8", {2}),
      {"attribute 'dtype' must be a dtype (f32, f64, f16, bf16, i8, u8, i16, u16, i32, u32, i64, u64, bool), found a name (f8)"});
  add("input unknown attribute", K::Input, {}, with(typeAttrs("f32", {2}), "layout", Str("nchw")),
      {"unknown attribute 'layout'; expected: dtype, shape"});
  add("input too many elements", K::Input, {}, typeAttrs("f32", {k2to32, k2to32}),
      {"shape [4294967296,4294967296] has more elements than fit in 64 bits"});
  add("param missing init", K::Parameter, {}, typeAttrs("f32", {2}), {"missing attribute 'init'"});
  add("param unknown init", K::Parameter, {}, with(typeAttrs("f32", {2}), "init", Str("gaussian")),
      {"unknown initializer 'gaussian'; expected one of: zeros, ones"});
  add("param extra argument", K::Parameter, {},
      with(paramAttrs(Init::zeros(), "f32", {2}), "seed", Int(3)),
      {"initializer 'zeros' takes no argument 'seed'"});
  add("param negative std", K::Parameter, {}, paramAttrs(Init::normal(0, -1, 1), "f32", {2}),
      {"initializer 'normal' needs std >= 0, got -1"});
  add("param negative dim", K::Parameter, {}, paramAttrs(Init::zeros(), "f32", {-3}),
      {"shape [-3] has a negative dimension"});
  add("constant both value and data", K::Constant, {},
      with(with(typeAttrs("f32", {1}), "value", Real(1)), "data", Reals({1})),
      {"expected exactly one of the attributes 'value' (fill) or 'data' (elements)"});
  add("constant neither value nor data", K::Constant, {}, typeAttrs("f32", {1}),
      {"expected exactly one of the attributes 'value' (fill) or 'data'"});
  add("constant data size", K::Constant, {}, with(typeAttrs("f32", {3}), "data", Reals({1, 2})),
      {"'data' has 2 elements but f32[3] needs 3"});
  add("constant value of wrong kind", K::Constant, {},
      with(typeAttrs("f32", {}), "value", Str("one")),
      {"attribute 'value' must be a number, found a name (one)"});
  add("iota axis out of range", K::Iota, {}, with(typeAttrs("i64", {3, 4}), "axis", Int(2)),
      {"iota axis 2 is out of range for rank 2"});
  add("iota scalar", K::Iota, {}, with(typeAttrs("i64", {}), "axis", Int(0)),
      {"iota axis 0 is out of range for rank 0"});
  add("iota bool", K::Iota, {}, with(typeAttrs("bool", {3}), "axis", Int(0)),
      {"expected a numeric result type, found bool[3]"});
  add("iota missing axis", K::Iota, {}, typeAttrs("i32", {3}), {"missing attribute 'axis'"});

  // Elementwise unary.
  for (OpKind op : kUnaryNumeric) {
    std::string name(opInfo(op).name);
    add(name + " bool", op, {b8({2})}, {}, {notNumeric + "bool[2]"});
    add(name + " attribute", op, {f32({2})}, {{"axis", Int(0)}},
        {"unknown attribute 'axis' (this op takes none)"});
  }
  for (OpKind op : kUnaryFloat) {
    std::string name(opInfo(op).name);
    add(name + " i32", op, {i32({3})}, {}, {notFloat + "i32[3]"});
    add(name + " bool", op, {b8({})}, {}, {notFloat + "bool[]"});
    add(name + " attribute", op, {f32({2})}, {{"axis", Int(0)}},
        {"unknown attribute 'axis' (this op takes none)"});
  }
  add("cast missing dtype", K::Cast, {f32({2})}, {}, {"missing attribute 'dtype'"});
  add("cast dtype of wrong kind", K::Cast, {f32({2})}, {{"dtype", Int(3)}},
      {"attribute 'dtype' must be a dtype (f32, f64, f16, bf16, i8, u8, i16, u16, i32, u32, i64, u64, bool), found an integer (3)"});
  add("cast unknown dtype", K::Cast, {f32({2})}, {{"dtype", Str("f8")}},
      {"must be a dtype", "found a name (f8)"});

  // Elementwise binary.
  for (OpKind op : kArithmetic) {
    std::string name(opInfo(op).name);
    add(name + " [3,4]x[5]", op, {f32({3, 4}), f32({5})}, {},
        {"shapes [3,4] and [5] are not broadcastable (dim -1: 4 vs 5)"});
    add(name + " [0,3]x[2,3]", op, {f32({0, 3}), f32({2, 3})}, {},
        {"shapes [0,3] and [2,3] are not broadcastable (dim -2: 0 vs 2)"});
    add(name + " [2,3,4]x[5,1,1]", op, {f32({2, 3, 4}), f32({5, 1, 1})}, {},
        {"shapes [2,3,4] and [5,1,1] are not broadcastable (dim -3: 2 vs 5)"});
    add(name + " f32 x f64", op, {f32({2}), f64({2})}, {},
        {"operand dtypes differ: f32[2] and f64[2]; insert a cast"});
    add(name + " i32 x f32", op, {i32({}), f32({2})}, {},
        {"operand dtypes differ: i32[] and f32[2]"});
    add(name + " bool", op, {b8({2}), b8({2})}, {}, {notNumeric + "bool[2]"});
    add(name + " attribute", op, {f32({2}), f32({2})}, {{"axis", Int(0)}},
        {"unknown attribute 'axis' (this op takes none)"});
  }
  add("add result too large", K::Add, {f32({k2to32, 1}), f32({1, k2to32})}, {},
      {"shape [4294967296,4294967296] has more elements than fit in 64 bits"});
  add("pow i32", K::Pow, {i32({2}), i32({2})}, {}, {notFloat + "i32[2]"});
  add("pow f32 x f64", K::Pow, {f32({2}), f64({2})}, {},
      {"operand dtypes differ: f32[2] and f64[2]"});
  add("pow broadcast", K::Pow, {f32({3}), f32({4})}, {},
      {"shapes [3] and [4] are not broadcastable"});
  for (OpKind op : kEquality) {
    std::string name(opInfo(op).name);
    add(name + " dtypes", op, {f32({2}), i32({2})}, {},
        {"operand dtypes differ: f32[2] and i32[2]"});
    add(name + " broadcast", op, {b8({2}), b8({3})}, {},
        {"shapes [2] and [3] are not broadcastable"});
  }
  for (OpKind op : kOrdered) {
    std::string name(opInfo(op).name);
    add(name + " bool", op, {b8({2}), b8({2})}, {}, {notNumeric + "bool[2]"});
    add(name + " dtypes", op, {i64({2}), i32({2})}, {},
        {"operand dtypes differ: i64[2] and i32[2]"});
    add(name + " broadcast", op, {f32({2, 3}), f32({2})}, {},
        {"shapes [2,3] and [2] are not broadcastable (dim -1: 3 vs 2)"});
  }
  add("select float condition", K::Select, {f32({3}), f32({3}), f32({3})}, {},
      {"condition must be bool, found f32[3]"});
  add("select value dtypes", K::Select, {b8({3}), f32({3}), f64({3})}, {},
      {"operand dtypes differ: f32[3] and f64[3]"});
  add("select cond vs value", K::Select, {b8({2}), f32({3}), f32({3})}, {},
      {"shapes [2] and [3] are not broadcastable"});
  add("select third operand", K::Select, {b8({2, 1}), f32({1, 3}), f32({4})}, {},
      {"shapes [2,3] and [4] are not broadcastable"});

  // Reductions.
  for (OpKind op : kReduce) {
    std::string name(opInfo(op).name);
    add(name + " axis out of range", op, {f32({2, 3, 4})}, reduceAttrs({3}, 0),
        {"reduction axis 3 is out of range for rank 3"});
    add(name + " negative axis out of range", op, {f32({2, 3, 4})}, reduceAttrs({0, -4}, 0),
        {"reduction axis -4 is out of range for rank 3"});
    add(name + " duplicate axes", op, {f32({2, 3, 4})}, reduceAttrs({2, -1}, 0),
        {"reduction axis -1 appears twice in [2,-1]"});
    add(name + " scalar axis", op, {f32({})}, reduceAttrs({0}, 0),
        {"reduction axis 0 is out of range for rank 0"});
    add(name + " keepdims 2", op, {f32({2})}, reduceAttrs({0}, 2),
        {"attribute 'keepdims' must be 0 or 1, got 2"});
    add(name + " missing keepdims", op, {f32({2})}, {{"axes", Ints({0})}},
        {"missing attribute 'keepdims'"});
    add(name + " axes of wrong kind", op, {f32({2})}, {{"axes", Int(0)}, {"keepdims", Int(0)}},
        {"attribute 'axes' must be a list of integers, found an integer (0)"});
    add(name + " unknown attribute", op, {f32({2})}, with(reduceAttrs({0}, 0), "axis", Int(0)),
        {"unknown attribute 'axis'; expected: axes, keepdims"});
  }
  add("reduce_mean i32", K::ReduceMean, {i32({4, 5})}, reduceAttrs({1}, 0),
      {notFloat + "i32[4,5]"});
  add("reduce_sum bool", K::ReduceSum, {b8({3})}, reduceAttrs({0}, 0), {notNumeric + "bool[3]"});
  add("reduce_max bool", K::ReduceMax, {b8({3})}, reduceAttrs({0}, 0), {notNumeric + "bool[3]"});
  add("reduce_min bool", K::ReduceMin, {b8({3})}, reduceAttrs({0}, 0), {notNumeric + "bool[3]"});
  add("argmax bool", K::ArgMax, {b8({3})}, {{"axis", Int(0)}, {"keepdims", Int(0)}},
      {notNumeric + "bool[3]"});
  add("argmax axis out of range", K::ArgMax, {f32({2, 3, 4})},
      {{"axis", Int(3)}, {"keepdims", Int(0)}}, {"argmax axis 3 is out of range for rank 3"});
  add("argmax scalar", K::ArgMax, {f32({})}, {{"axis", Int(0)}, {"keepdims", Int(0)}},
      {"argmax axis 0 is out of range for rank 0"});
  add("argmax missing keepdims", K::ArgMax, {f32({2})}, {{"axis", Int(0)}},
      {"missing attribute 'keepdims'"});
  add("argmax axes", K::ArgMax, {f32({2})},
      {{"axes", Ints({0})}, {"axis", Int(0)}, {"keepdims", Int(0)}},
      {"unknown attribute 'axes'; expected: axis, keepdims"});

  // Linear algebra and data movement.
  add("matmul inner", K::MatMul, {f32({2, 3}), f32({4, 5})}, {},
      {"inner dimensions differ: [2,3] x [4,5]"});
  add("matmul batched inner", K::MatMul, {f32({7, 2, 3}), f32({7, 2, 3})}, {},
      {"inner dimensions differ: [7,2,3] x [7,2,3]"});
  add("matmul rank 1", K::MatMul, {f32({3}), f32({3, 4})}, {},
      {"operands must have rank >= 2, found f32[3] x f32[3,4]"});
  add("matmul batch", K::MatMul, {f32({2, 3, 4}), f32({3, 4, 5})}, {},
      {"batch dimensions [2] and [3] are not broadcastable"});
  add("matmul dtypes", K::MatMul, {f32({2, 2}), f64({2, 2})}, {},
      {"operand dtypes differ: f32[2,2] and f64[2,2]"});
  add("matmul bool", K::MatMul, {b8({2, 2}), b8({2, 2})}, {}, {notNumeric + "bool[2,2]"});
  add("matmul result too large", K::MatMul, {f32({k2to32, 1}), f32({1, k2to32})}, {},
      {"shape [4294967296,4294967296] has more elements than fit in 64 bits"});
  add("transpose duplicate", K::Transpose, {f32({2, 3, 4})}, {{"perm", Ints({0, 0, 1})}},
      {"perm [0,0,1] is not a permutation of the 3 axes of f32[2,3,4]"});
  add("transpose short", K::Transpose, {f32({2, 3, 4})}, {{"perm", Ints({1, 0})}},
      {"perm [1,0] is not a permutation of the 3 axes of f32[2,3,4]"});
  add("transpose out of range", K::Transpose, {f32({2, 3, 4})}, {{"perm", Ints({0, 1, 3})}},
      {"perm [0,1,3] is not a permutation"});
  add("transpose negative", K::Transpose, {f32({2, 3})}, {{"perm", Ints({-1, 0})}},
      {"perm [-1,0] is not a permutation"});
  add("transpose reals", K::Transpose, {f32({2, 3})}, {{"perm", Reals({1.5, 0})}},
      {"attribute 'perm' must be a list of integers, found a list of reals ([1.5,0.0])"});
  add("transpose missing perm", K::Transpose, {f32({2, 3})}, {}, {"missing attribute 'perm'"});
  add("reshape count", K::Reshape, {f32({2, 3, 4})}, {{"shape", Ints({5, 5})}},
      {"cannot reshape f32[2,3,4] (24 elements) to [5,5] (25 elements)"});
  add("reshape two -1", K::Reshape, {f32({2, 3, 4})}, {{"shape", Ints({-1, -1})}},
      {"shape [-1,-1] has more than one -1"});
  add("reshape -1 indivisible", K::Reshape, {f32({2, 3, 4})}, {{"shape", Ints({-1, 5})}},
      {"cannot reshape f32[2,3,4] (24 elements) to [-1,5]"});
  add("reshape negative", K::Reshape, {f32({2, 3, 4})}, {{"shape", Ints({-2, 12})}},
      {"shape [-2,12] has a negative dimension"});
  add("reshape -1 with 0", K::Reshape, {f32({0, 3})}, {{"shape", Ints({-1, 0})}},
      {"cannot reshape f32[0,3] (0 elements) to [-1,0]"});
  add("broadcast_to mismatch", K::BroadcastTo, {f32({3})}, {{"shape", Ints({4})}},
      {"cannot broadcast f32[3] to [4]"});
  add("broadcast_to lower rank", K::BroadcastTo, {f32({2, 3})}, {{"shape", Ints({3})}},
      {"cannot broadcast f32[2,3] to [3]"});
  add("broadcast_to negative", K::BroadcastTo, {f32({1})}, {{"shape", Ints({-1})}},
      {"shape [-1] has a negative dimension"});
  add("slice limit beyond", K::Slice, {f32({10, 5})}, sliceAttrs({0, 0}, {11, 5}, {1, 1}),
      {"axis 0: slice [0:11] is outside 0..10 of f32[10,5]"});
  add("slice start after limit", K::Slice, {f32({10, 5})}, sliceAttrs({0, 4}, {10, 3}, {1, 1}),
      {"axis 1: slice [4:3] is outside 0..5 of f32[10,5]"});
  add("slice stride 0", K::Slice, {f32({10, 5})}, sliceAttrs({0, 0}, {10, 5}, {0, 1}),
      {"attribute 'strides' entries must be in 1..2^40, got [0,1]"});
  add("slice entries", K::Slice, {f32({10, 5})}, sliceAttrs({0}, {10, 5}, {1, 1}),
      {"attribute 'starts' must have 2 entries, got [0]"});
  add("slice negative start", K::Slice, {f32({10, 5})}, sliceAttrs({-1, 0}, {10, 5}, {1, 1}),
      {"attribute 'starts' entries must be in 0..2^40, got [-1,0]"});
  add("slice missing strides", K::Slice, {f32({10, 5})},
      {{"starts", Ints({0, 0})}, {"limits", Ints({1, 1})}}, {"missing attribute 'strides'"});
  add("concat dims", K::Concat, {f32({2, 3}), f32({2, 4})}, {{"axis", Int(0)}},
      {"operand 1 has type f32[2,4], which does not match f32[2,3] outside axis 0"});
  add("concat rank", K::Concat, {f32({2, 3}), f32({1, 3}), f32({6})}, {{"axis", Int(0)}},
      {"operand 2 has type f32[6], which does not match f32[2,3] outside axis 0"});
  add("concat dtypes", K::Concat, {f32({2, 3}), i32({2, 3})}, {{"axis", Int(0)}},
      {"operand dtypes differ: f32[2,3] and i32[2,3]"});
  add("concat axis", K::Concat, {f32({2, 3}), f32({2, 3})}, {{"axis", Int(2)}},
      {"concat axis 2 is out of range for rank 2"});
  add("concat scalar", K::Concat, {f32({})}, {{"axis", Int(0)}},
      {"concat axis 0 is out of range for rank 0"});
  add("concat result too large", K::Concat, {f32({k2to62}), f32({k2to62})}, {{"axis", Int(0)}},
      {"axis 0 of the result has more elements than fit in 64 bits"});
  add("concat result numel too large", K::Concat,
      {f32({k2to32, k2to32 / 4}), f32({k2to32, k2to32 / 4})}, {{"axis", Int(1)}},
      {"shape [4294967296,2147483648] has more elements than fit in 64 bits"});
  add("pad negative", K::Pad, {f32({2, 3})}, padAttrs({-1, 0}, {0, 0}),
      {"attribute 'low' entries must be in 0..2^40, got [-1,0]"});
  add("pad entries", K::Pad, {f32({2, 3})}, padAttrs({0, 0}, {1}),
      {"attribute 'high' must have 2 entries, got [1]"});
  add("pad missing value", K::Pad, {f32({2, 3})}, without(padAttrs({0, 0}, {0, 0}), "value"),
      {"missing attribute 'value'"});
  add("pad misspelt interior", K::Pad, {f32({2, 3})},
      with(padAttrs({0, 0}, {0, 0}), "interiors", Ints({1, 1})),
      {"unknown attribute 'interiors'; expected: low, high, value"});
  add("pad negative interior", K::Pad, {f32({2, 3})},
      with(padAttrs({0, 0}, {0, 0}), "interior", Ints({0, -1})),
      {"attribute 'interior' entries must be in 0..2^40, got [0,-1]"});
  add("gather float indices", K::Gather, {f32({5, 6}), f32({2})}, {{"axis", Int(0)}},
      {"expected integer indices (i32 or i64), found f32[2]"});
  add("gather bool indices", K::Gather, {f32({5, 6}), b8({2})}, {{"axis", Int(0)}},
      {"expected integer indices (i32 or i64), found bool[2]"});
  add("gather axis", K::Gather, {f32({5, 6, 7}), i32({2})}, {{"axis", Int(3)}},
      {"gather axis 3 is out of range for rank 3"});
  add("gather negative axis", K::Gather, {f32({5, 6, 7}), i32({2})}, {{"axis", Int(-4)}},
      {"gather axis -4 is out of range for rank 3"});
  add("gather missing axis", K::Gather, {f32({5}), i32({2})}, {}, {"missing attribute 'axis'"});
  add("one_hot depth 0", K::OneHot, {i32({4})}, {{"depth", Int(0)}, {"dtype", Str("f32")}},
      {"depth must be >= 1, got 0"});
  add("one_hot float indices", K::OneHot, {f32({4})}, {{"depth", Int(3)}, {"dtype", Str("f32")}},
      {"expected integer indices (i32 or i64), found f32[4]"});
  add("one_hot missing dtype", K::OneHot, {i32({4})}, {{"depth", Int(3)}},
      {"missing attribute 'dtype'"});

  // Convolution and pooling.
  const Attrs conv1 = convAttrs({1, 1}, {0, 0}, {1, 1}, 1);
  const Attrs groups2 = convAttrs({1, 1}, {0, 0}, {1, 1}, 2);
  add("conv2d groups", K::Conv2d, {f32({1, 3, 8, 8}), f32({8, 3, 3, 3})}, groups2,
      {"input channels 3 and output channels 8 must both be divisible by groups 2"});
  add("conv2d output channels vs groups", K::Conv2d, {f32({1, 4, 8, 8}), f32({3, 2, 3, 3})},
      groups2, {"input channels 4 and output channels 3 must both be divisible by groups 2"});
  add("conv2d groups 0", K::Conv2d, {f32({1, 3, 8, 8}), f32({8, 3, 3, 3})},
      convAttrs({1, 1}, {0, 0}, {1, 1}, 0), {"groups must be in 1..2^40, got 0"});
  add("conv2d weight channels", K::Conv2d, {f32({1, 3, 5, 5}), f32({8, 2, 3, 3})}, conv1,
      {"weight [8,2,3,3] expects 2 input channels per group, but input [1,3,5,5] with "
       "groups=1 has 3"});
  add("conv2d window too large", K::Conv2d, {f32({1, 3, 4, 4}), f32({8, 3, 7, 7})},
      convAttrs({1, 1}, {1, 1}, {1, 1}, 1),
      {"window of 7 (kernel 7, dilation 1) does not fit the height of 4 plus padding 1"});
  add("conv2d dilated window too large", K::Conv2d, {f32({1, 1, 9, 6}), f32({1, 1, 3, 3})},
      convAttrs({1, 1}, {0, 0}, {1, 3}, 1),
      {"window of 7 (kernel 3, dilation 3) does not fit the width of 6 plus padding 0"});
  add("conv2d i32", K::Conv2d, {i32({1, 1, 3, 3}), i32({1, 1, 1, 1})}, conv1,
      {"expected a floating-point input (f32 or f64), found i32[1,1,3,3]"});
  add("conv2d rank", K::Conv2d, {f32({1, 3, 8}), f32({8, 3, 3, 3})}, conv1,
      {"expected input x[N,C,H,W] of rank 4, found f32[1,3,8]"});
  add("conv2d weight rank", K::Conv2d, {f32({1, 3, 8, 8}), f32({8, 3, 3})}, conv1,
      {"expected weight w[O,C/groups,KH,KW] of rank 4, found f32[8,3,3]"});
  add("conv2d dtypes", K::Conv2d, {f32({1, 1, 3, 3}), f64({1, 1, 1, 1})}, conv1,
      {"operand dtypes differ: f32[1,1,3,3] and f64[1,1,1,1]"});
  add("conv2d stride 0", K::Conv2d, {f32({1, 1, 3, 3}), f32({1, 1, 1, 1})},
      convAttrs({0, 1}, {0, 0}, {1, 1}, 1),
      {"attribute 'stride' entries must be in 1..2^40, got [0,1]"});
  add("conv2d stride entries", K::Conv2d, {f32({1, 1, 3, 3}), f32({1, 1, 1, 1})},
      convAttrs({1}, {0, 0}, {1, 1}, 1), {"attribute 'stride' must have 2 entries, got [1]"});
  add("conv2d misspelt stride", K::Conv2d, {f32({1, 1, 3, 3}), f32({1, 1, 1, 1})},
      with(conv1, "strides", Ints({2, 2})),
      {"unknown attribute 'strides'; expected: stride, padding, dilation, groups"});
  add("conv2d missing dilation", K::Conv2d, {f32({1, 1, 3, 3}), f32({1, 1, 1, 1})},
      without(conv1, "dilation"), {"missing attribute 'dilation'"});
  add("conv2d groups of wrong kind", K::Conv2d, {f32({1, 1, 3, 3}), f32({1, 1, 1, 1})},
      with(conv1, "groups", Real(1)),
      {"attribute 'groups' must be an integer, found a real (1.0)"});
  const Attrs pool2 = poolAttrs({2, 2}, {2, 2}, {0, 0});
  add("max_pool2d padding over half", K::MaxPool2d, {f32({1, 1, 8, 8})},
      poolAttrs({3, 3}, {1, 1}, {2, 0}), {"padding [2,0] must be at most half the kernel [3,3]"});
  add("max_pool2d window too large", K::MaxPool2d, {f32({1, 1, 3, 8})},
      poolAttrs({5, 5}, {1, 1}, {0, 0}),
      {"window of 5 (kernel 5, dilation 1) does not fit the height of 3 plus padding 0"});
  add("max_pool2d rank", K::MaxPool2d, {f32({3, 8, 8})}, pool2,
      {"expected input x[N,C,H,W] of rank 4, found f32[3,8,8]"});
  add("max_pool2d i32", K::MaxPool2d, {i32({1, 1, 4, 4})}, pool2,
      {"expected a floating-point input (f32 or f64), found i32[1,1,4,4]"});
  add("max_pool2d count_include_pad", K::MaxPool2d, {f32({1, 1, 4, 4})},
      with(pool2, "count_include_pad", Int(1)),
      {"unknown attribute 'count_include_pad'; expected: kernel, stride, padding"});
  add("max_pool2d kernel 0", K::MaxPool2d, {f32({1, 1, 4, 4})}, poolAttrs({0, 2}, {1, 1}, {0, 0}),
      {"attribute 'kernel' entries must be in 1..2^40, got [0,2]"});
  // With an empty height every window would be padding only (max of nothing,
  // average over zero elements).
  add("max_pool2d empty height", K::MaxPool2d, {f32({1, 1, 0, 4})},
      poolAttrs({2, 2}, {1, 1}, {1, 1}),
      {"input f32[1,1,0,4] has an empty height: every window would hold padding only"});
  add("avg_pool2d empty width", K::AvgPool2d, {f32({1, 1, 4, 0})},
      avgPoolAttrs({2, 2}, {1, 1}, {1, 1}, 0), {"input f32[1,1,4,0] has an empty width"});
  add("max_pool2d_grad empty height", K::MaxPool2dGrad, {f32({1, 1, 0, 4}), f32({1, 1, 1, 5})},
      poolAttrs({2, 2}, {1, 1}, {1, 1}), {"input f32[1,1,0,4] has an empty height"});
  add("avg_pool2d count_include_pad 2", K::AvgPool2d, {f32({1, 1, 4, 4})},
      avgPoolAttrs({2, 2}, {2, 2}, {0, 0}, 2),
      {"attribute 'count_include_pad' must be 0 or 1, got 2"});
  add("avg_pool2d missing count_include_pad", K::AvgPool2d, {f32({1, 1, 4, 4})}, pool2,
      {"missing attribute 'count_include_pad'"});
  add("avg_pool2d padding over half", K::AvgPool2d, {f32({1, 1, 8, 8})},
      avgPoolAttrs({2, 1}, {1, 1}, {1, 1}, 1),
      {"padding [1,1] must be at most half the kernel [2,1]"});
  add("avg_pool2d bool", K::AvgPool2d, {b8({1, 1, 4, 4})}, avgPoolAttrs({2, 2}, {2, 2}, {0, 0}, 1),
      {"expected a floating-point input (f32 or f64), found bool[1,1,4,4]"});

  // Gradient ops.
  const Attrs scatter = {{"axis", Int(1)}, {"size", Int(6)}};
  add("scatter_add float indices", K::ScatterAdd, {f32({2}), f32({5, 2})}, scatter,
      {"expected integer indices (i32 or i64), found f32[2]"});
  add("scatter_add negative axis", K::ScatterAdd, {i32({2}), f32({5, 2})},
      {{"axis", Int(-1)}, {"size", Int(6)}},
      {"axis -1 does not fit indices i32[2] into updates f32[5,2]"});
  add("scatter_add axis too large", K::ScatterAdd, {i32({2, 3}), f32({5, 2})}, scatter,
      {"axis 1 does not fit indices i32[2,3] into updates f32[5,2]"});
  add("scatter_add shape", K::ScatterAdd, {i32({2, 3}), f32({5, 4, 3})}, scatter,
      {"updates f32[5,4,3] do not have indices' shape [2,3] at axis 1"});
  add("scatter_add size", K::ScatterAdd, {i32({2}), f32({5, 2})},
      {{"axis", Int(1)}, {"size", Int(-1)}}, {"size must be >= 0, got -1"});
  add("scatter_add missing size", K::ScatterAdd, {i32({2}), f32({5, 2})}, {{"axis", Int(1)}},
      {"missing attribute 'size'"});
  add("scatter_add result too large", K::ScatterAdd, {i32({2}), f32({2, k2to32})},
      {{"axis", Int(0)}, {"size", Int(k2to32)}},
      {"shape [4294967296,4294967296] has more elements than fit in 64 bits"});
  const Attrs gradIn = with(convAttrs({2, 2}, {2, 2}, {1, 1}, 1), "input_hw", Ints({32, 32}));
  add("conv2d_grad_input gradient shape", K::Conv2dGradInput,
      {f32({2, 8, 15, 15}), f32({8, 3, 5, 5})}, gradIn,
      {"gradient f32[2,8,15,15] does not match the forward result shape [2,8,16,16]"});
  add("conv2d_grad_input gradient channels", K::Conv2dGradInput,
      {f32({2, 4, 16, 16}), f32({8, 3, 5, 5})}, gradIn,
      {"gradient f32[2,4,16,16] does not match the forward result shape [2,8,16,16]"});
  add("conv2d_grad_input i32", K::Conv2dGradInput, {i32({2, 8, 16, 16}), i32({8, 3, 5, 5})}, gradIn,
      {"expected a floating-point gradient (f32 or f64), found i32[2,8,16,16]"});
  add("conv2d_grad_input dtypes", K::Conv2dGradInput, {f32({2, 8, 16, 16}), f64({8, 3, 5, 5})},
      gradIn, {"operand dtypes differ: f32[2,8,16,16] and f64[8,3,5,5]"});
  add("conv2d_grad_input input_hw entries", K::Conv2dGradInput,
      {f32({2, 8, 16, 16}), f32({8, 3, 5, 5})}, with(gradIn, "input_hw", Ints({32})),
      {"attribute 'input_hw' must have 2 entries, got [32]"});
  add("conv2d_grad_input groups 0", K::Conv2dGradInput, {f32({2, 8, 16, 16}), f32({8, 3, 5, 5})},
      with(gradIn, "groups", Int(0)), {"groups must be in 1..2^40, got 0"});
  add("conv2d_grad_input rank", K::Conv2dGradInput, {f32({8, 16, 16}), f32({8, 3, 5, 5})}, gradIn,
      {"expected gradient g[N,O,OH,OW] of rank 4, found f32[8,16,16]"});
  add("conv2d_grad_input kernel", K::Conv2dGradInput, {f32({2, 8, 16, 16}), f32({8, 3, 5, 5})},
      with(gradIn, "kernel", Ints({5, 5})),
      {"unknown attribute 'kernel'; expected: input_hw, groups, stride, padding, dilation"});
  add("conv2d_grad_input result too large", K::Conv2dGradInput,
      {f32({1, 1, 1, 1}), f32({1, 1, 1, 1})},
      with(convAttrs({int64_t(1) << 40, int64_t(1) << 40}, {0, 0}, {1, 1}, 1), "input_hw",
           Ints({int64_t(1) << 40, int64_t(1) << 40})),
      {"more elements than fit in 64 bits"});
  const Attrs gradW = with(convAttrs({2, 2}, {2, 2}, {1, 1}, 1), "kernel", Ints({5, 5}));
  add("conv2d_grad_weight gradient shape", K::Conv2dGradWeight,
      {f32({2, 3, 32, 32}), f32({2, 8, 17, 16})}, gradW,
      {"gradient f32[2,8,17,16] does not match the forward result shape [2,8,16,16]"});
  add("conv2d_grad_weight batch", K::Conv2dGradWeight, {f32({2, 3, 32, 32}), f32({3, 8, 16, 16})},
      gradW, {"gradient f32[3,8,16,16] does not match the forward result shape [2,8,16,16]"});
  add("conv2d_grad_weight dtypes", K::Conv2dGradWeight, {f32({2, 3, 32, 32}), f64({2, 8, 16, 16})},
      gradW, {"operand dtypes differ: f32[2,3,32,32] and f64[2,8,16,16]"});
  add("conv2d_grad_weight groups", K::Conv2dGradWeight, {f32({2, 3, 32, 32}), f32({2, 8, 16, 16})},
      with(gradW, "groups", Int(2)),
      {"input channels 3 and output channels 8 must both be divisible by groups 2"});
  add("conv2d_grad_weight missing kernel", K::Conv2dGradWeight,
      {f32({2, 3, 32, 32}), f32({2, 8, 16, 16})}, without(gradW, "kernel"),
      {"missing attribute 'kernel'"});
  add("conv2d_grad_weight i32", K::Conv2dGradWeight, {i32({1, 1, 3, 3}), i32({1, 1, 3, 3})},
      with(conv1, "kernel", Ints({1, 1})),
      {"expected a floating-point input (f32 or f64), found i32[1,1,3,3]"});
  add("conv2d_grad_weight window", K::Conv2dGradWeight, {f32({1, 1, 3, 3}), f32({1, 1, 1, 1})},
      with(conv1, "kernel", Ints({4, 4})),
      {"window of 4 (kernel 4, dilation 1) does not fit the height of 3 plus padding 0"});
  const Attrs pool3 = poolAttrs({3, 3}, {2, 2}, {1, 1});
  add("max_pool2d_grad gradient shape", K::MaxPool2dGrad, {f32({1, 3, 7, 7}), f32({1, 3, 3, 3})},
      pool3, {"gradient f32[1,3,3,3] does not match the forward result shape [1,3,4,4]"});
  add("max_pool2d_grad dtypes", K::MaxPool2dGrad, {f32({1, 3, 7, 7}), f64({1, 3, 4, 4})}, pool3,
      {"operand dtypes differ: f32[1,3,7,7] and f64[1,3,4,4]"});
  add("max_pool2d_grad count_include_pad", K::MaxPool2dGrad, {f32({1, 3, 7, 7}), f32({1, 3, 4, 4})},
      with(pool3, "count_include_pad", Int(0)), {"unknown attribute 'count_include_pad'"});
  add("max_pool2d_grad rank", K::MaxPool2dGrad, {f32({3, 7, 7}), f32({3, 4, 4})}, pool3,
      {"expected input x[N,C,H,W] of rank 4, found f32[3,7,7]"});
  const Attrs avgGrad = with(avgPoolAttrs({3, 3}, {2, 2}, {1, 1}, 0), "input_hw", Ints({7, 7}));
  add("avg_pool2d_grad gradient shape", K::AvgPool2dGrad, {f32({1, 3, 5, 4})}, avgGrad,
      {"gradient f32[1,3,5,4] does not match the forward result shape [1,3,4,4]"});
  add("avg_pool2d_grad rank", K::AvgPool2dGrad, {f32({3, 4, 4})}, avgGrad,
      {"expected gradient g[N,C,OH,OW] of rank 4, found f32[3,4,4]"});
  add("avg_pool2d_grad missing input_hw", K::AvgPool2dGrad, {f32({1, 3, 4, 4})},
      without(avgGrad, "input_hw"), {"missing attribute 'input_hw'"});
  add("avg_pool2d_grad i32", K::AvgPool2dGrad, {i32({1, 3, 4, 4})}, avgGrad,
      {"expected a floating-point input (f32 or f64), found i32[1,3,7,7]"});
  add("avg_pool2d_grad padding over half", K::AvgPool2dGrad, {f32({1, 3, 4, 4})},
      with(avgGrad, "padding", Ints({2, 2})),
      {"padding [2,2] must be at most half the kernel [3,3]"});

  add("dropout rate 1", K::Dropout, {f32({4}), i64({})}, {{"rate", Real(1)}},
      {"rate must be in [0, 1), got 1"});
  add("dropout negative rate", K::Dropout, {f32({4}), i64({})}, {{"rate", Real(-0.1)}},
      {"rate must be in [0, 1), got -0.1"});
  add("dropout nan rate", K::Dropout, {f32({4}), i64({})}, {{"rate", Real(std::nan(""))}},
      {"rate must be in [0, 1), got nan"});
  add("dropout i32 seed", K::Dropout, {f32({4}), i32({})}, {{"rate", Real(0.5)}},
      {"seed must be an i64 scalar (i64[]), found i32[]"});
  add("dropout vector seed", K::Dropout, {f32({4}), i64({1})}, {{"rate", Real(0.5)}},
      {"seed must be an i64 scalar (i64[]), found i64[1]"});
  add("dropout i32 input", K::Dropout, {i32({4}), i64({})}, {{"rate", Real(0.5)}},
      {"expected a floating-point input (f32 or f64), found i32[4]"});
  add("dropout missing rate", K::Dropout, {f32({4}), i64({})}, {}, {"missing attribute 'rate'"});

  add("all_reduce unknown reduction", K::AllReduce, {f32({4})}, {{"reduction", Str("max")}},
      {"reduction must be sum or mean, got 'max'"});
  add("all_reduce mean of integers", K::AllReduce, {i32({4})}, {{"reduction", Str("mean")}},
      {"expected a floating-point operand (f32 or f64), found i32[4]"});
  add("all_reduce missing reduction", K::AllReduce, {f32({4})}, {},
      {"missing attribute 'reduction'"});
  return v;
}

// A ValidCase's or an ErrorCase's label, op, operand types and attributes.
template <class Case> std::string caseName(const Case &c) {
  std::vector<std::string> types, entries;
  for (const TensorType &t : c.operands)
    types.push_back(typeString(t));
  for (const auto &[name, value] : c.attrs.entries())
    entries.push_back(fmt::format("{}={}", name, attrValueString(value)));
  return fmt::format("{} [{}({}) {{{}}}]", c.label, opInfo(c.op).name, fmt::join(types, ", "),
                     fmt::join(entries, ", "));
}

// A graph of one input per operand type, ready for the node under test.
Graph graphWithInputs(const std::vector<TensorType> &types, std::vector<ValueId> &ids) {
  Graph g;
  for (size_t i = 0; i < types.size(); ++i) {
    Node in;
    in.op = OpKind::Input;
    in.name = fmt::format("a{}", i);
    in.attrs = {{"dtype", Str(std::string(dtypeName(types[i].dtype)))},
                {"shape", Ints(types[i].shape)}};
    ids.push_back(g.add(std::move(in)));
  }
  return g;
}

Node nodeFor(OpKind op, std::vector<ValueId> operands, Attrs attrs, SourceLoc loc = {}) {
  Node node;
  node.op = op;
  node.operands = std::move(operands);
  node.attrs = std::move(attrs);
  node.loc = std::move(loc);
  if (op == OpKind::Input || op == OpKind::Parameter)
    node.name = "v";
  return node;
}

// `g` becomes a graph of the case's operands as inputs, and then gets the
// case's node, at `loc`, through Graph::add: that node's value.
template <class Case> ValueId addCaseNode(Graph &g, const Case &c, SourceLoc loc) {
  std::vector<ValueId> ids;
  g = graphWithInputs(c.operands, ids);
  return g.add(nodeFor(c.op, ids, c.attrs, std::move(loc)));
}

std::string inferError(OpKind op, const Attrs &attrs, const std::vector<TensorType> &in) {
  try {
    TensorType t = inferType(op, attrs, in);
    return "no error; inferred " + typeString(t);
  } catch (const Error &e) {
    return e.what();
  }
}

// --- Tests ----------------------------------------------------------------

TEST(ShapeRules, ValidCases) {
  auto cases = validCases();
  for (const ValidCase &c : cases) {
    SCOPED_TRACE(caseName(c));
    TensorType got;
    try {
      got = inferType(c.op, c.attrs, c.operands);
    } catch (const Error &e) {
      ADD_FAILURE() << "unexpected error: " << e.what();
      continue;
    }
    EXPECT_EQ(typeString(got), typeString(c.expected));
    EXPECT_EQ(got, c.expected);
  }
  RecordProperty("valid_cases", static_cast<int>(cases.size()));
}

// The same cases through Graph::add (which checks arity and names first) and
// verify(), which re-infers every node.
TEST(ShapeRules, ValidCasesThroughGraphAdd) {
  for (const ValidCase &c : validCases()) {
    SCOPED_TRACE(caseName(c));
    Graph g;
    try {
      ValueId id = addCaseNode(g, c, SourceLoc("case.sg", 1, 1));
      EXPECT_EQ(g.type(id), c.expected);
      g.addOutput("out", id);
      verify(g);
    } catch (const Error &e) {
      ADD_FAILURE() << "unexpected error: " << e.what();
    }
  }
}

TEST(ShapeRules, ErrorCases) {
  auto cases = errorCases();
  for (const ErrorCase &c : cases) {
    SCOPED_TRACE(caseName(c));
    std::string message = inferError(c.op, c.attrs, c.operands);
    // Every message starts with the op's name...
    EXPECT_THAT(message, StartsWith(std::string(opInfo(c.op).name) + ": "));
    // ...carries no location (Graph::add and verify add it)...
    EXPECT_THAT(message, Not(HasSubstr("error:")));
    // ...and says what was expected and what was found.
    for (const std::string &part : c.expected)
      EXPECT_THAT(message, HasSubstr(part));
  }
  RecordProperty("error_cases", static_cast<int>(cases.size()));
}

TEST(ShapeRules, ErrorCasesThroughGraphAddCarryTheNodeLocation) {
  for (const ErrorCase &c : errorCases()) {
    SCOPED_TRACE(caseName(c));
    Graph g;
    std::string message = errorOf([&] { addCaseNode(g, c, SourceLoc("model.sg", 14, 9)); });
    EXPECT_THAT(message, StartsWith(fmt::format("model.sg:14:9: error: {}: ", opInfo(c.op).name)));
    for (const std::string &part : c.expected)
      EXPECT_THAT(message, HasSubstr(part));
    EXPECT_EQ(g.size(), c.operands.size()) << "a rejected node must not be added";
  }
}

// A new line in ops.def fails here until both tables cover it.
TEST(ShapeRules, EveryOpHasValidAndErrorCases) {
  std::map<OpKind, int> valid, errors;
  for (const ValidCase &c : validCases())
    ++valid[c.op];
  for (const ErrorCase &c : errorCases())
    ++errors[c.op];
  ASSERT_EQ(allOps().size(), static_cast<size_t>(kNumOps));
  for (const OpInfo &info : allOps()) {
    EXPECT_GE(valid[info.kind], 1) << "no valid shape-rule case for '" << info.name << "'";
    EXPECT_GE(errors[info.kind], 1) << "no error shape-rule case for '" << info.name << "'";
    // Ops with attributes or several operands get several error cases.
    if (info.arity != 1 || info.opClass != OpClass::Elementwise) {
      EXPECT_GE(errors[info.kind], 2) << "'" << info.name << "' needs more error cases";
    }
  }
}

// The unknown-attribute message lists what the op reads, each name once
// (the gradient ops read some twice: their own and the forward rule's).
TEST(ShapeRules, UnknownAttributeListsEachExpectedNameOnce) {
  std::vector<TensorType> conv = {f32({2, 8, 16, 16}), f32({8, 3, 5, 5})};
  Attrs base = convAttrs({2, 2}, {2, 2}, {1, 1}, 1);
  EXPECT_THAT(inferError(OpKind::Conv2dGradInput,
                         with(with(base, "input_hw", Ints({32, 32})), "kernel", Ints({5, 5})),
                         conv),
              EndsWith("unknown attribute 'kernel'; expected: input_hw, groups, stride, padding, "
                       "dilation"));
  std::vector<TensorType> xg = {f32({2, 3, 32, 32}), f32({2, 8, 16, 16})};
  EXPECT_THAT(inferError(OpKind::Conv2dGradWeight,
                         with(with(base, "kernel", Ints({5, 5})), "input_hw", Ints({32, 32})), xg),
              EndsWith("unknown attribute 'input_hw'; expected: kernel, groups, stride, padding, "
                       "dilation"));
  std::vector<TensorType> g = {f32({1, 3, 4, 4})};
  EXPECT_THAT(
      inferError(OpKind::AvgPool2dGrad,
                 with(with(avgPoolAttrs({3, 3}, {2, 2}, {1, 1}, 0), "input_hw", Ints({7, 7})),
                      "dilation", Ints({1, 1})),
                 g),
      EndsWith("unknown attribute 'dilation'; expected: input_hw, kernel, stride, "
               "padding, count_include_pad"));
}

// Graph::add checks the operand count before the shape rule runs.
TEST(ShapeRules, ArityErrorsFromGraphAdd) {
  int checked = 0;
  for (const OpInfo &info : allOps()) {
    SCOPED_TRACE(std::string(info.name));
    std::vector<int> counts;
    if (info.arity < 0)
      counts = {0};
    else if (info.arity == 0)
      counts = {1, 2};
    else
      counts = {info.arity - 1, info.arity + 1};
    for (int count : counts) {
      std::vector<ValueId> ids;
      Graph g = graphWithInputs(std::vector<TensorType>(count, f32({2})), ids);
      std::string expected = info.arity < 0
                                 ? "expected at least one operand, got none"
                                 : fmt::format("expected {} operand{}, got {}", info.arity,
                                               info.arity == 1 ? "" : "s", count);
      try {
        g.add(nodeFor(info.kind, ids, {}, SourceLoc("arity.sg", 3, 5)));
        ADD_FAILURE() << "no error for " << count << " operands";
      } catch (const Error &e) {
        EXPECT_EQ(std::string(e.what()),
                  fmt::format("arity.sg:3:5: error: {}: {}", info.name, expected));
      }
      ++checked;
    }
  }
  EXPECT_GT(checked, kNumOps);
}

TEST(ShapeRules, ArityMessageExamples) {
  std::vector<ValueId> ids;
  Graph g = graphWithInputs({f32({2})}, ids);
  EXPECT_EQ(errorOf([&] { g.add(nodeFor(OpKind::Add, ids, {}, SourceLoc("m.sg", 2, 7))); }),
            "m.sg:2:7: error: add: expected 2 operands, got 1");
  // No location: no "LOC: " prefix.
  EXPECT_EQ(errorOf([&] {
              g.add(nodeFor(OpKind::Neg, {ids[0], ids[0]}, {}));
            }),
            "error: neg: expected 1 operand, got 2");
  EXPECT_EQ(errorOf([&] { g.add(nodeFor(OpKind::Neg, {7}, {}, SourceLoc("m.sg", 4, 1))); }),
            "m.sg:4:1: error: neg: operand %7 is not defined before this node");
}

// --- Gradient ops against their forward ops --------------------------------

TEST(ShapeRules, ScatterAddInvertsGatherShape) {
  struct Config {
    TensorType data, indices;
    int64_t axis;
  };
  std::vector<Config> configs = {
      {f32({5, 6, 7}), i32({2, 3}), 1}, {f32({5, 6, 7}), i64({4}), -1},
      {f32({5, 6, 7}), i64({}), 0},     {f64({9}), i32({3, 2, 2}), 0},
      {f32({2, 3}), i64({0}), 1},       {f32({4, 1, 3}), i32({5}), -2},
  };
  for (const Config &c : configs) {
    SCOPED_TRACE(typeString(c.data) + " " + typeString(c.indices) + " axis " +
                 std::to_string(c.axis));
    TensorType in[] = {c.data, c.indices};
    TensorType gathered = inferType(OpKind::Gather, {{"axis", Int(c.axis)}}, in);
    int64_t axis = c.axis < 0 ? c.axis + c.data.rank() : c.axis;
    TensorType back[] = {c.indices, gathered};
    EXPECT_EQ(inferType(OpKind::ScatterAdd,
                        {{"axis", Int(axis)}, {"size", Int(c.data.shape[axis])}}, back),
              c.data);
  }
}

TEST(ShapeRules, ConvGradientsRecoverForwardShapes) {
  struct Config {
    Shape x, w;
    std::vector<int64_t> stride, padding, dilation;
    int64_t groups;
  };
  std::vector<Config> configs = {
      {{2, 3, 32, 32}, {8, 3, 5, 5}, {2, 2}, {2, 2}, {1, 1}, 1},
      {{2, 3, 33, 31}, {8, 3, 5, 5}, {2, 2}, {2, 2}, {1, 1}, 1},
      {{1, 4, 10, 12}, {6, 2, 3, 3}, {1, 2}, {0, 1}, {2, 1}, 2},
      {{1, 4, 5, 5}, {4, 1, 3, 3}, {1, 1}, {0, 0}, {1, 1}, 4},
      {{3, 2, 7, 9}, {5, 2, 2, 4}, {3, 2}, {1, 0}, {2, 2}, 1},
      {{1, 1, 0, 3}, {1, 1, 1, 1}, {1, 1}, {1, 1}, {1, 1}, 1},
  };
  for (DType dtype : {DType::F32, DType::F64})
    for (const Config &c : configs) {
      TensorType x{dtype, c.x}, w{dtype, c.w};
      SCOPED_TRACE(typeString(x) + " * " + typeString(w));
      Attrs conv = convAttrs(c.stride, c.padding, c.dilation, c.groups);
      TensorType xw[] = {x, w};
      TensorType y = inferType(OpKind::Conv2d, conv, xw);
      TensorType gw[] = {y, w};
      EXPECT_EQ(
          inferType(OpKind::Conv2dGradInput, with(conv, "input_hw", Ints({c.x[2], c.x[3]})), gw),
          x);
      TensorType xg[] = {x, y};
      EXPECT_EQ(
          inferType(OpKind::Conv2dGradWeight, with(conv, "kernel", Ints({c.w[2], c.w[3]})), xg), w);
    }
}

TEST(ShapeRules, PoolGradientsRecoverForwardShapes) {
  struct Config {
    Shape x;
    std::vector<int64_t> kernel, stride, padding;
  };
  std::vector<Config> configs = {
      {{1, 3, 8, 8}, {2, 2}, {2, 2}, {0, 0}}, {{1, 3, 7, 7}, {3, 3}, {2, 2}, {1, 1}},
      {{2, 1, 5, 4}, {3, 1}, {1, 1}, {0, 0}}, {{1, 1, 3, 3}, {2, 2}, {2, 2}, {1, 1}},
      {{4, 2, 9, 8}, {2, 2}, {2, 2}, {0, 0}}, {{1, 1, 1, 1}, {1, 1}, {5, 5}, {0, 0}},
  };
  for (const Config &c : configs) {
    TensorType x = f32(c.x);
    SCOPED_TRACE(typeString(x));
    Attrs pool = poolAttrs(c.kernel, c.stride, c.padding);
    TensorType in[] = {x};
    TensorType y = inferType(OpKind::MaxPool2d, pool, in);
    TensorType xy[] = {x, y};
    EXPECT_EQ(inferType(OpKind::MaxPool2dGrad, pool, xy), x);
    for (int64_t include : {0, 1}) {
      Attrs avg = with(pool, "count_include_pad", Int(include));
      EXPECT_EQ(inferType(OpKind::AvgPool2d, avg, in), y);
      TensorType g[] = {y};
      EXPECT_EQ(inferType(OpKind::AvgPool2dGrad, with(avg, "input_hw", Ints({c.x[2], c.x[3]})), g),
                x);
    }
  }
}

// The window formula against PyTorch's: floor((H + 2p - d(k-1) - 1) / s) + 1,
// an error where the dilated kernel does not fit the padded input.
TEST(ShapeRules, ConvOutputSizeFormula) {
  int valid = 0, invalid = 0;
  for (int64_t h = 1; h <= 9; ++h)
    for (int64_t k = 1; k <= 4; ++k)
      for (int64_t s = 1; s <= 3; ++s)
        for (int64_t p = 0; p <= 2; ++p)
          for (int64_t d = 1; d <= 3; ++d) {
            SCOPED_TRACE(fmt::format("h={} k={} s={} p={} d={}", h, k, s, p, d));
            std::vector<TensorType> in = {f32({1, 2, h, 5}), f32({3, 2, k, 1})};
            Attrs attrs = convAttrs({s, 1}, {p, 0}, {d, 1}, 1);
            int64_t numerator = h + 2 * p - d * (k - 1) - 1;
            if (numerator < 0) {
              EXPECT_THAT(inferError(OpKind::Conv2d, attrs, in),
                          HasSubstr("does not fit the height of"));
              ++invalid;
              continue;
            }
            EXPECT_EQ(inferType(OpKind::Conv2d, attrs, in), f32({1, 3, numerator / s + 1, 5}));
            ++valid;
          }
  EXPECT_GT(valid, 0);
  EXPECT_GT(invalid, 0);
}

// --- Where errors come from ------------------------------------------------

std::string callSite(int line) { return fmt::format("test_shape_rules.cpp:{}:", line); }

TEST(BuilderLocations, OpFunctionReportsItsCallSite) {
  GraphBuilder b("m");
  Value x = b.input("x", DType::F32, {2, 3});
  Value w = b.input("w", DType::F32, {4, 5});
  int line = 0;
  std::string message = errorOf([&] {
    line = __LINE__ + 1; // the call below
    matmul(x, w);
  });
  EXPECT_THAT(message, StartsWith(callSite(line)));
  EXPECT_THAT(message, ContainsRegex("^test_shape_rules\\.cpp:[0-9]+:[0-9]+: error: matmul: "
                                     "inner dimensions differ: \\[2,3\\] x \\[4,5\\]$"));
  // The failed node is not added.
  EXPECT_EQ(b.graph().size(), 2u);
}

// Runs `statement`, which must throw, and checks that its message starts with
// "test_shape_rules.cpp:<line>:<column>: error: " for the line where the macro
// is used (__LINE__ and the builder's std::source_location both resolve there)
// and goes on with "error: " + `expected`. The message is computed before the
// matchers, which read `line`.
#define EXPECT_ERROR_AT_LINE(statement, expected)                                                  \
  do {                                                                                             \
    int line = 0;                                                                                  \
    std::string message = errorOf([&] {                                                            \
      line = __LINE__;                                                                             \
      statement;                                                                                   \
    });                                                                                            \
    EXPECT_THAT(message, ContainsRegex(fmt::format("^test_shape_rules\\.cpp:{}:[0-9]+: "           \
                                                   "error: ",                                      \
                                                   line)));                                        \
    EXPECT_THAT(message, HasSubstr(std::string("error: ") + (expected)));                          \
  } while (0)

TEST(BuilderLocations, EachCallReportsItsOwnLine) {
  GraphBuilder b("m");
  Value x = b.input("x", DType::F32, {2, 3});
  Value i = b.input("i", DType::I32, {4});
  int first = 0, second = 0;
  std::string m1 = errorOf([&] {
    first = __LINE__ + 1; // the call below
    sum(x, {2});
  });
  std::string m2 = errorOf([&] {
    second = __LINE__ + 1; // the call below
    exp(i);
  });
  ASSERT_NE(first, second);
  EXPECT_THAT(m1, StartsWith(callSite(first)));
  EXPECT_THAT(m1, HasSubstr("error: reduce_sum: reduction axis 2 is out of range for rank 2"));
  EXPECT_THAT(m2, StartsWith(callSite(second)));
  EXPECT_THAT(m2, HasSubstr("error: exp: expected a floating-point operand (f32 or f64), "
                            "found i32[4]"));

  EXPECT_ERROR_AT_LINE(reshape(x, {-1, -1}), "reshape: shape [-1,-1] has more than one -1");
  EXPECT_ERROR_AT_LINE(gather(x, x, 0), "gather: expected integer indices (i32 or i64)");
  EXPECT_ERROR_AT_LINE(conv2d(x, x), "conv2d: expected input x[N,C,H,W] of rank 4");
  EXPECT_ERROR_AT_LINE(dropout(x, i, 0.5), "dropout: seed must be an i64 scalar");
  EXPECT_ERROR_AT_LINE(transpose(x, {0, 0}), "transpose: perm [0,0] is not a permutation");
  EXPECT_ERROR_AT_LINE(slice(x, {0, 0}, {3, 3}), "slice: axis 0: slice [0:3] is outside 0..2");
  EXPECT_ERROR_AT_LINE(concat({x, i}, 0), "concat: operand dtypes differ: f32[2,3] and i32[4]");
  EXPECT_ERROR_AT_LINE(oneHot(i, 0, DType::F32), "one_hot: depth must be >= 1, got 0");
  EXPECT_ERROR_AT_LINE(maxPool2d(x), "max_pool2d: expected input x[N,C,H,W] of rank 4");
  EXPECT_ERROR_AT_LINE(neg(cast(x, DType::Bool)),
                       "neg: expected a numeric operand, found bool[2,3]");
  EXPECT_ERROR_AT_LINE(b.input("bad", DType::F32, {2, -1}),
                       "input: shape [2,-1] has a negative dimension");
  EXPECT_ERROR_AT_LINE(b.input("x", DType::F32, {2}),
                       "input: the name 'x' is already used in graph 'm'");
  EXPECT_ERROR_AT_LINE(b.param("p", DType::F32, {2}, Init::normal(0, -1, 1)),
                       "param: initializer 'normal' needs std >= 0");
  // Composites report the caller's line too (naming the op inside them).
  EXPECT_ERROR_AT_LINE(softmax(x, 5), "reduce_max: reduction axis 5 is out of range");
  EXPECT_ERROR_AT_LINE(linear(x, x, Value()), "matmul: inner dimensions differ: [2,3] x [2,3]");
  // The failed nodes were not added.
  EXPECT_EQ(b.graph().size(), 2u + 1u); // x, i, and the good cast
}

TEST(BuilderLocations, OperatorsReportTheExpressionsLine) {
  GraphBuilder b("m");
  Value a = b.input("a", DType::F32, {3, 4});
  Value c = b.input("c", DType::F32, {5});
  Value flag = b.input("flag", DType::Bool, {2});
  int line = 0;
  std::string message = errorOf([&] {
    line = __LINE__ + 1; // the call below
    (void)(a + c);
  });
  EXPECT_THAT(message, StartsWith(callSite(line)));
  EXPECT_THAT(message,
              HasSubstr("error: add: shapes [3,4] and [5] are not broadcastable (dim -1: 4 vs 5)"));
  EXPECT_ERROR_AT_LINE((void)(a - c), "sub: shapes [3,4] and [5] are not broadcastable");
  EXPECT_ERROR_AT_LINE((void)(c * a), "mul: shapes [5] and [3,4] are not broadcastable");
  EXPECT_ERROR_AT_LINE((void)(a / c), "div: shapes [3,4] and [5] are not broadcastable");
  // A number operand becomes a scalar of the other side's dtype.
  EXPECT_ERROR_AT_LINE((void)(flag + 1.0), "add: expected a numeric operand, found bool[2]");
  EXPECT_ERROR_AT_LINE((void)(2.0 * flag), "mul: expected a numeric operand, found bool[]");
  EXPECT_ERROR_AT_LINE((void)(-flag), "neg: expected a numeric operand, found bool[2]");
  // In a longer expression, the failing operator's line.
  int bad = 0;
  std::string nested = errorOf([&] {
    Value ok = a * 2.0 + 1.0;
    bad = __LINE__ + 1; // the call below
    (void)(ok - c);
  });
  EXPECT_THAT(nested, StartsWith(callSite(bad)));
  EXPECT_THAT(nested, HasSubstr("error: sub: shapes [3,4] and [5]"));
}

TEST(BuilderLocations, LocationOverrideWins) {
  GraphBuilder b("m");
  Value x = b.input("x", DType::F32, {2, 3});
  LocationScope scope(b, SourceLoc("layer.sg", 8, 4));
  EXPECT_THAT(errorOf([&] { matmul(x, x); }),
              StartsWith("layer.sg:8:4: error: matmul: inner dimensions differ: [2,3] x [2,3]"));
}

TEST(NodeLocations, GraphAddPrefixesTheNodeLocation) {
  std::vector<ValueId> ids;
  Graph g = graphWithInputs({f32({2, 3}), f32({4, 5})}, ids);
  EXPECT_EQ(errorOf([&] { g.add(nodeFor(OpKind::MatMul, ids, {}, SourceLoc("model.sg", 12, 9))); }),
            "model.sg:12:9: error: matmul: inner dimensions differ: [2,3] x [4,5]");
  EXPECT_EQ(errorOf([&] {
              g.add(nodeFor(OpKind::Neg, {ids[0]}, {{"strides", Ints({1})}},
                            SourceLoc("model.sg", 13, 1)));
            }),
            "model.sg:13:1: error: neg: unknown attribute 'strides' (this op takes none)");
  EXPECT_EQ(errorOf([&] {
              g.add(nodeFor(OpKind::Neg, {ids[0]}, {}));
              g.add(nodeFor(OpKind::Add, ids, {}));
            }),
            "error: add: shapes [2,3] and [4,5] are not broadcastable "
            "(dim -2: 2 vs 4)");
}

TEST(NodeLocations, VerifyReportsTheBadNodesLocation) {
  std::vector<ValueId> ids;
  Graph good = graphWithInputs({f32({2, 3})}, ids);
  ValueId t = good.add(
      nodeFor(OpKind::Transpose, ids, {{"perm", Ints({1, 0})}}, SourceLoc("net.sg", 5, 11)));
  ValueId r =
      good.add(nodeFor(OpKind::ReduceSum, {t}, reduceAttrs({0}, 0), SourceLoc("net.sg", 6, 3)));
  good.addOutput("out", r);
  verify(good);

  Graph badAttrs = good;
  badAttrs.nodes[t].attrs.set("perm", Ints({0, 0}));
  EXPECT_EQ(errorOf([&] { verify(badAttrs); }),
            "net.sg:5:11: error: transpose: perm [0,0] is not a permutation of "
            "the 2 axes of f32[2,3]");

  Graph badType = good;
  badType.nodes[r].type = f32({9});
  EXPECT_EQ(errorOf([&] { verify(badType); }),
            "net.sg:6:3: error: reduce_sum: recorded type f32[9] differs from inferred "
            "type f32[2]");

  // A type change upstream shows at the first node whose rule now fails.
  Graph badInput = good;
  badInput.nodes[ids[0]].attrs.set("shape", Ints({2, 3, 4}));
  badInput.nodes[ids[0]].type = f32({2, 3, 4});
  EXPECT_THAT(errorOf([&] { verify(badInput); }),
              StartsWith("net.sg:5:11: error: transpose: perm [1,0] is not a "
                         "permutation of the 3 axes of f32[2,3,4]"));
}

TEST(NodeLocations, BuilderFinishVerifies) {
  GraphBuilder b("m");
  Value x = b.input("x", DType::F32, {2, 3});
  b.output("y", relu(x));
  Graph g = b.finish();
  ASSERT_EQ(g.size(), 2u);
  EXPECT_EQ(g.node(1).loc.file, "test_shape_rules.cpp");
  EXPECT_GT(g.node(1).loc.line, 0);
}

} // namespace
