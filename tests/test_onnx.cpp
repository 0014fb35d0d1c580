// ONNX import: models from Debian's libonnx-testdata against their reference
// outputs, the one-message report of unsupported models, and malformed files.
#include "stepc/autodiff.h"
#include "stepc/backend.h"
#include "stepc/onnx.h"
#include "stepc/text.h"

#include "gradcheck.h"

#include "testing.h"
#include "transposed_params.h"

#include <fmt/format.h>
#include <onnx/onnx_pb.h>

#include <cmath>
#include <filesystem>
#include <functional>
#include <optional>
#include <fstream>
#include <random>
#include <sstream>
#include <tuple>

namespace stepc {
namespace {

namespace fs = std::filesystem;

const fs::path kData = "/usr/share/libonnx-testdata/data";

#define REQUIRE_TESTDATA()                                                                         \
  if (!fs::exists(kData))                                                                          \
  GTEST_SKIP() << "libonnx-testdata is not installed"

std::string readBytes(const fs::path &path) {
  std::ifstream file(path, std::ios::binary);
  std::ostringstream bytes;
  bytes << file.rdbuf();
  return bytes.str();
}

// Runs one test directory through the conformance runner on the interpreter.
ConformanceResult runOne(const fs::path &dir, std::string *log = nullptr) {
  ConformanceOptions options;
  options.run = [](const Graph &g, const TensorMap &in, const TensorMap &p) {
    return interpret(g, in, p);
  };
  std::FILE *out = std::tmpfile();
  ConformanceResult result = runOnnxConformance(dir.string(), options, out);
  if (log) {
    std::rewind(out);
    char buffer[4096];
    size_t n;
    while ((n = std::fread(buffer, 1, sizeof buffer, out)) > 0)
      log->append(buffer, n);
  }
  std::fclose(out);
  return result;
}

class TestData : public ::testing::TestWithParam<const char *> {};

TEST_P(TestData, MatchesReferenceOutputs) {
  REQUIRE_TESTDATA();
  std::string log;
  ConformanceResult r = runOne(kData / GetParam(), &log);
  EXPECT_EQ(r.passed, 1) << log;
  EXPECT_EQ(r.failed, 0) << log;
}

INSTANTIATE_TEST_SUITE_P(
    Onnx, TestData,
    ::testing::Values(
        "node/test_gemm_all_attributes", "node/test_matmul_3d", "node/test_conv_with_autopad_same",
        "node/test_conv_with_strides_and_asymmetric_padding", "node/test_maxpool_2d_ceil",
        "node/test_averagepool_2d_pads", "node/test_softmax_axis_0", "node/test_logsoftmax_axis_1",
        "node/test_slice_neg_steps", "node/test_gather_negative_indices",
        "node/test_reshape_negative_extended_dims", "node/test_batchnorm_epsilon",
        "node/test_layer_normalization_3d_axis1_epsilon", "node/test_constant_pad",
        "node/test_reflect_pad", "node/test_edge_pad", "node/test_clip_default_inbounds",
        "node/test_onehot_with_axis", "node/test_argmax_keepdims_example_select_last_index",
        "pytorch-converted/test_Linear", "pytorch-converted/test_Conv2d",
        "pytorch-converted/test_MaxPool2d", "pytorch-converted/test_AvgPool2d",
        "pytorch-converted/test_Softmax", "pytorch-converted/test_LogSoftmax",
        "pytorch-operator/test_operator_flatten"),
    [](const auto &info) {
      std::string name = info.param;
      for (char &c : name)
        if (!std::isalnum(static_cast<unsigned char>(c)))
          c = '_';
      return name;
    });

TEST(OnnxImport, InitializersBecomeTrainableParams) {
  REQUIRE_TESTDATA();
  OnnxModel m = importOnnx((kData / "pytorch-converted/test_Linear/model.onnx").string());
  ASSERT_FALSE(m.params.empty());
  EXPECT_EQ(m.graph.params().size(), m.params.size());
  for (const auto &[name, value] : m.params) {
    ValueId id = *m.graph.findNamed(name);
    EXPECT_EQ(m.graph.type(id), value.type()) << name;
    EXPECT_TRUE(isFloat(value.dtype())) << name;
  }
  // Differentiate sum(output) with respect to every param.
  GraphBuilder b(m.graph);
  Value y = b.value(m.graph.outputs[0].value);
  b.output("loss", sum(y));
  GradResult g = grad(b.finish(), "loss");
  TensorMap inputs = randomInputs(g.graph, 1);
  TensorMap out = interpret(g.graph, inputs, m.params);
  for (const auto &[name, value] : m.params)
    EXPECT_TRUE(out.count("grad_" + name)) << name;
}

TEST(OnnxImport, InputsNeededAtImportAreBoundToConstants) {
  REQUIRE_TESTDATA();
  fs::path dir = kData / "node/test_reshape_reordered_all_dims";
  try {
    importOnnx((dir / "model.onnx").string());
    FAIL() << "expected an error: the target shape is a graph input";
  } catch (const OnnxImportError &e) {
    ASSERT_EQ(e.problems().size(), 1u) << e.what();
    EXPECT_EQ(e.problems()[0].kind, OnnxProblem::Kind::StaticInput);
    EXPECT_EQ(e.problems()[0].input, "shape");
    EXPECT_NE(std::string(e.what()).find("Reshape"), std::string::npos) << e.what();
  }
  OnnxImportOptions options;
  options.inputValues["shape"] = readOnnxTensor((dir / "test_data_set_0/input_1.pb").string());
  OnnxModel m = importOnnx((dir / "model.onnx").string(), options);
  EXPECT_EQ(m.graph.inputs().size(), 1u);
  EXPECT_EQ(m.inputs, (std::vector<std::string>{"data", ""}));
}

// A hand-built model: ONNX's protobuf classes write the bytes.
struct ModelMaker {
  onnx::ModelProto model;
  onnx::GraphProto *graph;

  ModelMaker() : graph(model.mutable_graph()) {
    model.set_ir_version(8);
    model.add_opset_import()->set_version(13);
    graph->set_name("handmade");
  }
  void input(const std::string &name, int elemType, std::vector<int64_t> dims) {
    auto *tensor = graph->add_input()->mutable_type()->mutable_tensor_type();
    graph->mutable_input(graph->input_size() - 1)->set_name(name);
    tensor->set_elem_type(elemType);
    for (int64_t d : dims)
      tensor->mutable_shape()->add_dim()->set_dim_value(d);
  }
  onnx::NodeProto *node(const std::string &op, const std::string &name,
                        std::vector<std::string> ins, std::vector<std::string> outs) {
    auto *n = graph->add_node();
    n->set_op_type(op);
    n->set_name(name);
    for (auto &i : ins)
      n->add_input(i);
    for (auto &o : outs)
      n->add_output(o);
    return n;
  }
  void output(const std::string &name) { graph->add_output()->set_name(name); }
  std::string bytes() const { return model.SerializeAsString(); }
};

// The OnnxImportError importing `m` as `file` throws; none, and a test
// failure, where it imports.
std::optional<OnnxImportError> importFailure(const ModelMaker &m, const std::string &file) {
  try {
    importOnnxBytes(m.bytes(), file);
  } catch (const OnnxImportError &e) {
    return e;
  }
  ADD_FAILURE() << file << " imported; expected an OnnxImportError";
  return std::nullopt;
}

TEST(OnnxImport, UnsupportedModelListsEveryNodeInOneMessage) {
  ModelMaker m;
  m.input("x", onnx::TensorProto::FLOAT, {1, 2, 4, 4});
  m.input("h", onnx::TensorProto::COMPLEX128, {4});
  m.node("Relu", "fine", {"x"}, {"r"});
  m.node("FancyOp", "fancy", {"r"}, {"f"});
  auto *pad = m.node("Pad", "wrapped", {"x", "pads"}, {"p"});
  auto *mode = pad->add_attribute();
  mode->set_name("mode");
  mode->set_s("wrap");
  auto *pads = m.graph->add_initializer();
  pads->set_name("pads");
  pads->set_data_type(onnx::TensorProto::INT64);
  pads->add_dims(8);
  for (int i = 0; i < 8; ++i)
    pads->add_int64_data(i % 4 == 3 ? 1 : 0);
  auto *cast = m.node("Cast", "to_complex", {"x"}, {"c"});
  auto *to = cast->add_attribute();
  to->set_name("to");
  to->set_i(onnx::TensorProto::COMPLEX64);
  auto *dropout = m.node("Dropout", "train_drop", {"x", "", "training"}, {"d"});
  (void)dropout;
  auto *training = m.graph->add_initializer();
  training->set_name("training");
  training->set_data_type(onnx::TensorProto::BOOL);
  training->add_int32_data(1);
  for (const char *out : {"f", "p", "c", "d"})
    m.output(out);
  std::optional<OnnxImportError> e = importFailure(m, "handmade.onnx");
  ASSERT_TRUE(e);
  std::string message = e->what();
  SCOPED_TRACE(message);
  EXPECT_EQ(message.find('\n'), message.find("problems:") + 9);
  for (const char *expected :
       {"handmade.onnx", "FancyOp node 'fancy'", "no mapping for ONNX operator FancyOp",
        "Pad node 'wrapped'", "mode 'wrap'", "Cast node 'to_complex'", "complex64",
        "Dropout node 'train_drop'", "training mode", "graph input 'h'"})
    EXPECT_NE(message.find(expected), std::string::npos) << expected;
  EXPECT_EQ(message.find("'fine'"), std::string::npos);
  EXPECT_EQ(e->problems().size(), 5u);
}

// Imports a hand-built model and runs it on the interpreter.
TensorMap runModel(const ModelMaker &m, const TensorMap &inputs) {
  OnnxModel model = importOnnxBytes(m.bytes(), m.graph->name() + ".onnx");
  return interpret(model.graph, inputs, model.params);
}

void setInt(onnx::NodeProto *node, const std::string &name, int64_t value) {
  auto *a = node->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INT);
  a->set_i(value);
}

// Before opset 13, Softmax flattens the input to 2-D at `axis` and
// normalizes whole rows; from 13 on it normalizes one axis.
TEST(OnnxImport, SoftmaxBeforeOpset13CoercesTo2d) {
  Tensor x = testing::randomTensor(DType::F32, {2, 3, 4}, 7);
  for (int64_t opset : {11, 13}) {
    ModelMaker m;
    m.model.mutable_opset_import(0)->set_version(opset);
    m.input("x", onnx::TensorProto::FLOAT, {2, 3, 4});
    setInt(m.node("Softmax", "s", {"x"}, {"y"}), "axis", 1);
    m.output("y");
    Tensor y = runModel(m, {{"x", x}}).at("y");
    SCOPED_TRACE(opset);
    for (int64_t b = 0; b < 2; ++b)
      for (int64_t k = 0; k < (opset < 13 ? 1 : 4); ++k) {
        // The elements one softmax normalizes: 12 per batch before 13, the
        // 3 along axis 1 after.
        double total = 0;
        for (int64_t i = 0; i < 12; ++i)
          if (opset < 13 || i % 4 == k)
            total += y.real(b * 12 + i);
        EXPECT_NEAR(total, 1.0, 1e-5);
      }
  }
}

// An attribute of the wrong type is reported (it used to read as 0), and an
// element type ONNX does not define reads as a number, once.
TEST(OnnxImport, WrongAttributeTypeAndUnknownElementTypeAreReported) {
  ModelMaker m;
  m.input("x", onnx::TensorProto::FLOAT, {2, 3});
  m.input("odd", 99, {2});
  auto *axis = m.node("Softmax", "soft", {"x"}, {"y"})->add_attribute();
  axis->set_name("axis");
  axis->set_type(onnx::AttributeProto::STRING);
  axis->set_s("1");
  m.output("y");
  std::optional<OnnxImportError> e = importFailure(m, "typed.onnx");
  ASSERT_TRUE(e);
  std::string message = e->what();
  SCOPED_TRACE(message);
  EXPECT_NE(message.find("Softmax node 'soft'"), std::string::npos);
  EXPECT_NE(message.find("attribute 'axis' must be INT, found STRING"), std::string::npos);
  EXPECT_NE(message.find("graph input 'odd' has element type 99 (unknown to ONNX)"),
            std::string::npos);
  EXPECT_EQ(message.find("element type element type"), std::string::npos);
}

TEST(OnnxImport, MatMulPromotesVectors) {
  Tensor v = testing::randomTensor(DType::F32, {3}, 1);
  Tensor a = testing::randomTensor(DType::F32, {3, 4}, 2);
  ModelMaker m;
  m.input("v", onnx::TensorProto::FLOAT, {3});
  m.input("a", onnx::TensorProto::FLOAT, {3, 4});
  m.node("MatMul", "va", {"v", "a"}, {"y"});
  m.node("Transpose", "t", {"a"}, {"at"});
  m.node("MatMul", "av", {"at", "v"}, {"z"});
  m.output("y");
  m.output("z");
  TensorMap out = runModel(m, {{"v", v}, {"a", a}});
  ASSERT_EQ(out.at("y").shape(), Shape{4});
  ASSERT_EQ(out.at("z").shape(), Shape{4});
  for (int64_t j = 0; j < 4; ++j) {
    double expected = 0;
    for (int64_t i = 0; i < 3; ++i)
      expected += v.real(i) * a.real(i * 4 + j);
    EXPECT_NEAR(out.at("y").real(j), expected, 1e-5);
    EXPECT_NEAR(out.at("z").real(j), expected, 1e-5);
  }
}

// Gelu (opset 20) is not in the 1.12 test data: check both forms here.
TEST(OnnxImport, GeluExactAndTanh) {
  Tensor x = testing::randomTensor(DType::F32, {16}, 3, -4, 4);
  for (const char *approximate : {"none", "tanh"}) {
    ModelMaker m;
    m.model.mutable_opset_import(0)->set_version(20);
    m.input("x", onnx::TensorProto::FLOAT, {16});
    auto *a = m.node("Gelu", "g", {"x"}, {"y"})->add_attribute();
    a->set_name("approximate");
    a->set_type(onnx::AttributeProto::STRING);
    a->set_s(approximate);
    m.output("y");
    Tensor y = runModel(m, {{"x", x}}).at("y");
    for (int64_t i = 0; i < 16; ++i) {
      double v = x.real(i);
      double expected =
          std::string(approximate) == "none"
              ? 0.5 * v * (1 + std::erf(v / std::sqrt(2.0)))
              : 0.5 * v * (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
      EXPECT_NEAR(y.real(i), expected, 1e-5) << approximate << " at " << v;
    }
  }
}

// Logical ops have no stepc op of their own: they are selects.
TEST(OnnxImport, LogicalOpsAsSelects) {
  Tensor a = Tensor::of<bool>({4}, {false, false, true, true});
  Tensor b = Tensor::of<bool>({4}, {false, true, false, true});
  ModelMaker m;
  m.input("a", onnx::TensorProto::BOOL, {4});
  m.input("b", onnx::TensorProto::BOOL, {4});
  m.node("And", "and", {"a", "b"}, {"and"});
  m.node("Or", "or", {"a", "b"}, {"or"});
  m.node("Not", "not", {"a"}, {"not"});
  m.node("Xor", "xor", {"a", "b"}, {"xor"});
  for (const char *out : {"and", "or", "not", "xor"})
    m.output(out);
  TensorMap out = runModel(m, {{"a", a}, {"b", b}});
  EXPECT_EQ(out.at("and"), Tensor::of<bool>({4}, {false, false, false, true}));
  EXPECT_EQ(out.at("or"), Tensor::of<bool>({4}, {false, true, true, true}));
  EXPECT_EQ(out.at("not"), Tensor::of<bool>({4}, {true, true, false, false}));
  EXPECT_EQ(out.at("xor"), Tensor::of<bool>({4}, {false, true, true, false}));
}

TEST(OnnxImport, DynamicShapesAreRejected) {
  ModelMaker m;
  m.input("x", onnx::TensorProto::FLOAT, {3});
  m.graph->mutable_input(0)
      ->mutable_type()
      ->mutable_tensor_type()
      ->mutable_shape()
      ->mutable_dim(0)
      ->set_dim_param("batch");
  m.node("Relu", "r", {"x"}, {"y"});
  m.output("y");
  std::optional<OnnxImportError> e = importFailure(m, "dynamic.onnx");
  ASSERT_TRUE(e);
  EXPECT_NE(std::string(e->what()).find("dynamic dimension 'batch'"), std::string::npos)
      << e->what();
}

// Whatever the bytes, the import either succeeds or throws stepc::Error.
void expectCleanFailure(const std::string &bytes, const std::string &what) {
  try {
    OnnxModel m = importOnnxBytes(bytes, what);
    verify(m.graph);
  } catch (const Error &) {
  }
}

TEST(OnnxImport, MalformedFilesFailCleanly) {
  REQUIRE_TESTDATA();
  fs::path tmp = fs::temp_directory_path() / ("stepc_onnx_" + std::to_string(::getpid()));
  fs::create_directories(tmp);
  std::string whole = readBytes(kData / "pytorch-converted/test_Conv2d/model.onnx");
  ASSERT_GT(whole.size(), 100u);
  // Truncated copies, written to files and read back through importOnnx.
  for (size_t cut :
       {size_t(0), size_t(1), size_t(7), whole.size() / 3, whole.size() / 2, whole.size() - 1}) {
    fs::path file = tmp / ("truncated_" + std::to_string(cut) + ".onnx");
    std::ofstream(file, std::ios::binary).write(whole.data(), static_cast<std::streamsize>(cut));
    EXPECT_THROW(importOnnx(file.string()), Error) << cut;
  }
  for (size_t cut = 0; cut < whole.size(); cut += 37)
    expectCleanFailure(whole.substr(0, cut), "truncated");
  // Flipped bytes and garbage.
  std::mt19937_64 rng(12345);
  for (int i = 0; i < 300; ++i) {
    std::string bytes = whole;
    for (int k = 0; k < 4; ++k)
      bytes[rng() % bytes.size()] = static_cast<char>(rng());
    expectCleanFailure(bytes, "mutated");
  }
  for (int i = 0; i < 50; ++i) {
    std::string garbage(rng() % 2000, '\0');
    for (char &c : garbage)
      c = static_cast<char>(rng());
    expectCleanFailure(garbage, "garbage");
  }
  EXPECT_THROW(importOnnx((tmp / "missing.onnx").string()), Error);
  try {
    importOnnx((tmp / "truncated_7.onnx").string());
  } catch (const Error &e) {
    EXPECT_NE(std::string(e.what()).find("truncated_7.onnx"), std::string::npos) << e.what();
  }
  fs::remove_all(tmp);
}

TEST(OnnxImport, TensorProtosOfUnsupportedTypesAreReported) {
  onnx::TensorProto t;
  t.set_data_type(onnx::TensorProto::COMPLEX64);
  t.add_dims(2);
  t.set_raw_data(std::string("\x01\x02", 2));
  try {
    parseOnnxTensor(t.SerializeAsString(), "t.pb");
    FAIL();
  } catch (const OnnxImportError &e) {
    ASSERT_EQ(e.problems().size(), 1u);
    EXPECT_EQ(e.problems()[0].kind, OnnxProblem::Kind::DType);
    EXPECT_EQ(e.problems()[0].typeName, "complex64");
  }
  // A shape that claims more data than the proto holds.
  onnx::TensorProto big;
  big.set_data_type(onnx::TensorProto::FLOAT);
  big.add_dims(int64_t(1) << 40);
  big.set_raw_data("abcd");
  EXPECT_THROW(parseOnnxTensor(big.SerializeAsString(), "big.pb"), Error);
}

// ---------------------------------------------------------------------------
// Ops written as compositions of stepc ops at import (onnx_math_ops.cpp,
// onnx_index_ops.cpp, onnx_resize_ops.cpp).

void setString(onnx::NodeProto *node, const std::string &name, const std::string &value) {
  auto *a = node->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::STRING);
  a->set_s(value);
}

void addInitializer(ModelMaker &m, const std::string &name, const Tensor &t) {
  auto *init = m.graph->add_initializer();
  init->set_name(name);
  for (int64_t d : t.shape())
    init->add_dims(d);
  if (t.dtype() == DType::I64) {
    init->set_data_type(onnx::TensorProto::INT64);
    for (int64_t i = 0; i < t.numel(); ++i)
      init->add_int64_data(t.data<int64_t>()[i]);
  } else if (t.dtype() == DType::U8) { // typed data of 8-bit ints: int32_data
    init->set_data_type(onnx::TensorProto::UINT8);
    for (int64_t i = 0; i < t.numel(); ++i)
      init->add_int32_data(static_cast<int32_t>(t.integer(i)));
  } else {
    init->set_data_type(onnx::TensorProto::FLOAT);
    for (int64_t i = 0; i < t.numel(); ++i)
      init->add_float_data(static_cast<float>(t.real(i)));
  }
}

// The model on the interpreter and on the CPU backend, which must agree.
TensorMap runBoth(const ModelMaker &m, const TensorMap &inputs) {
  OnnxModel model = importOnnxBytes(m.bytes(), m.graph->name() + ".onnx");
  TensorMap want = interpret(model.graph, inputs, model.params);
  TensorMap got = runOnBackend(findBackend("cpu", "test"), model.graph, inputs, model.params);
  for (const auto &[name, value] : want) {
    const Tensor &g = got.at(name);
    EXPECT_EQ(g.type(), value.type()) << name;
    for (int64_t i = 0; i < value.numel() && g.type() == value.type(); ++i)
      if (!(std::isnan(g.real(i)) && std::isnan(value.real(i)))) // NaN on both agrees
        EXPECT_NEAR(g.real(i), value.real(i), 1e-4 * (1 + std::abs(value.real(i))))
            << name << "[" << i << "]";
  }
  return want;
}

// d sum(y * r) / d inputs by finite differences in f64, r fixed.
void expectGradients(const ModelMaker &m, const TensorMap &inputs,
                     std::vector<std::string> wrt) {
  OnnxModel model = importOnnxBytes(m.bytes(), m.graph->name() + ".onnx");
  GraphBuilder b(model.graph);
  Value y = b.value(model.graph.outputs[0].value);
  Tensor r = testing::randomTensor(y.dtype(), y.shape(), 99);
  b.output("loss", sum(mul(y, constantData(b, r.reals(), y.dtype(), y.shape()))));
  GradcheckReport report = gradcheck(b.finish(), "loss", inputs, model.params, std::move(wrt));
  EXPECT_TRUE(report.passed) << report.worstWhere;
  EXPECT_GT(report.elementsChecked, 0);
}

// A Gemm with transB = 1 reads its weight initializer transposed (how
// PyTorch exports nn.Linear): the import stores that param transposed once,
// so no transpose reads it, and the model still computes ONNX's
// Y = X W^T + b, on the interpreter and the CPU backend, with gradients for
// training. A weight also read as it is (S, by a MatMul) keeps its layout.
TEST(OnnxImport, GemmTransposedWeightsAreStoredTransposed) {
  const int64_t rows = 5, depth = 37, cols = 19;
  Tensor x = testing::randomTensor(DType::F32, {rows, depth}, 1);
  Tensor w = testing::randomTensor(DType::F32, {cols, depth}, 2);
  Tensor bias = testing::randomTensor(DType::F32, {cols}, 3);
  Tensor s = testing::randomTensor(DType::F32, {cols, cols}, 4);
  ModelMaker m;
  m.input("x", onnx::TensorProto::FLOAT, {rows, depth});
  addInitializer(m, "W", w);
  addInitializer(m, "b", bias);
  addInitializer(m, "S", s);
  setInt(m.node("Gemm", "linear", {"x", "W", "b"}, {"y"}), "transB", 1);
  setInt(m.node("Gemm", "shared_t", {"y", "S"}, {"u"}), "transB", 1);
  m.node("MatMul", "shared", {"u", "S"}, {"v"});
  m.output("y");
  m.output("v");

  OnnxModel model = importOnnxBytes(m.bytes(), "linear.onnx");
  // Renamed W.T: values in ONNX's layout do not load under the new name.
  EXPECT_EQ(model.transposedParams, std::vector<std::string>{"W.T"});
  EXPECT_FALSE(model.graph.findNamed("W"));
  EXPECT_FALSE(model.params.count("W"));
  ValueId wId = *model.graph.findNamed("W.T"), sId = *model.graph.findNamed("S");
  EXPECT_EQ(model.graph.type(wId).shape, (Shape{depth, cols}));
  EXPECT_EQ(model.graph.type(sId).shape, (Shape{cols, cols}));
  const Tensor &stored = model.params.at("W.T");
  ASSERT_EQ(stored.shape(), (Shape{depth, cols}));
  for (int64_t j = 0; j < cols; ++j)
    for (int64_t k = 0; k < depth; ++k)
      EXPECT_EQ(stored.real(k * cols + j), w.real(j * depth + k));
  EXPECT_EQ(model.params.at("S").real(1), s.real(1));
  bool sReadTransposed = false;
  for (const Node &node : model.graph.nodes) {
    EXPECT_FALSE(node.op == OpKind::Transpose && node.operands[0] == wId);
    sReadTransposed |= node.op == OpKind::Transpose && node.operands[0] == sId;
  }
  EXPECT_TRUE(sReadTransposed);

  TensorMap out = runBoth(m, {{"x", x}});
  const Tensor &y = out.at("y");
  ASSERT_EQ(y.shape(), (Shape{rows, cols}));
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) {
      double expected = bias.real(j);
      for (int64_t k = 0; k < depth; ++k)
        expected += x.real(i * depth + k) * w.real(j * depth + k);
      EXPECT_NEAR(y.real(i * cols + j), expected, 1e-4) << i << ", " << j;
    }
  expectGradients(m, {{"x", x}}, {"x", "W.T", "b"});
}

// At batch 1 W's one product has one row: dot products read W fastest as
// ONNX stores it (a contiguous row per output), so it keeps its layout and
// a transpose reads it. W2, also read by a two-row product, is stored
// transposed, and so is W3, read by two one-row products (one transpose
// read by two products would be copied by a kernel of its own). All
// compute ONNX's Y = X W^T + b on both backends.
TEST(OnnxImport, GemmWeightsOfOneRowProductsKeepTheirLayout) {
  const int64_t depth = 70, cols = 37;
  Tensor x = testing::randomTensor(DType::F32, {1, depth}, 1);
  Tensor x2 = testing::randomTensor(DType::F32, {2, depth}, 5);
  Tensor w = testing::randomTensor(DType::F32, {cols, depth}, 2);
  Tensor w2 = testing::randomTensor(DType::F32, {cols, depth}, 3);
  Tensor x3 = testing::randomTensor(DType::F32, {1, depth}, 7);
  Tensor w3 = testing::randomTensor(DType::F32, {cols, depth}, 6);
  Tensor bias = testing::randomTensor(DType::F32, {cols}, 4);
  ModelMaker m;
  m.input("x", onnx::TensorProto::FLOAT, {1, depth});
  m.input("x2", onnx::TensorProto::FLOAT, {2, depth});
  m.input("x3", onnx::TensorProto::FLOAT, {1, depth});
  addInitializer(m, "W", w);
  addInitializer(m, "W2", w2);
  addInitializer(m, "W3", w3);
  addInitializer(m, "b", bias);
  setInt(m.node("Gemm", "linear", {"x", "W", "b"}, {"y"}), "transB", 1);
  setInt(m.node("Gemm", "one_row", {"x", "W2", "b"}, {"u"}), "transB", 1);
  setInt(m.node("Gemm", "two_rows", {"x2", "W2", "b"}, {"v"}), "transB", 1);
  setInt(m.node("Gemm", "shared_1", {"x", "W3", "b"}, {"s"}), "transB", 1);
  setInt(m.node("Gemm", "shared_2", {"x3", "W3", "b"}, {"t"}), "transB", 1);
  m.output("y");
  m.output("u");
  m.output("v");
  m.output("s");
  m.output("t");

  OnnxModel model = importOnnxBytes(m.bytes(), "batch1.onnx");
  EXPECT_EQ(model.transposedParams, (std::vector<std::string>{"W2.T", "W3.T"}));
  ValueId wId = *model.graph.findNamed("W");
  EXPECT_EQ(model.graph.type(wId).shape, (Shape{cols, depth}));
  EXPECT_EQ(model.params.at("W").real(3), w.real(3));

  TensorMap out = runBoth(m, {{"x", x}, {"x2", x2}, {"x3", x3}});
  for (const auto &[name, in, weight] :
       {std::tuple{"y", &x, &w}, std::tuple{"u", &x, &w2}, std::tuple{"v", &x2, &w2},
        std::tuple{"s", &x, &w3}, std::tuple{"t", &x3, &w3}}) {
    const Tensor &y = out.at(name);
    int64_t rows = in->shape()[0];
    ASSERT_EQ(y.shape(), (Shape{rows, cols})) << name;
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j) {
        double expected = bias.real(j);
        for (int64_t k = 0; k < depth; ++k)
          expected += in->real(i * depth + k) * weight->real(j * depth + k);
        EXPECT_NEAR(y.real(i * cols + j), expected, 1e-4) << name << " " << i << ", " << j;
      }
  }
}

// Import-time canonicalization on a graph as text: of three weights each
// read by one transpose and a three-row product, only v is stored
// transposed. w is also a graph output and u is updated by the graph, so
// both keep their layout and their names.
TEST(OnnxImport, TransposedParamsSkipOutputsAndUpdatedParams) {
  Graph graph = parseGraph(R"(graph g {
  input %x : f32[3,5]
  input %n : f32[4,5]
  param %w : f32[4,5] = zeros()
  param %u : f32[4,5] = zeros()
  param %v : f32[4,5] = zeros()
  %wt = transpose(%w) {perm=[1,0]}
  %ut = transpose(%u) {perm=[1,0]}
  %vt = transpose(%v) {perm=[1,0]}
  %a = matmul(%x, %wt)
  %b = matmul(%x, %ut)
  %c = matmul(%x, %vt)
  %unext = mul(%n, %n)
  update %u = %unext
  output a = %a
  output b = %b
  output c = %c
  output w = %w
})");
  TensorMap params;
  for (const char *name : {"w", "u", "v"})
    params[name] = testing::randomTensor(DType::F32, {4, 5}, 8);
  EXPECT_EQ(onnx_import::storeTransposedParams(graph, params), std::vector<std::string>{"v.T"});
  EXPECT_EQ(graph.type(*graph.findNamed("w")).shape, (Shape{4, 5}));
  EXPECT_EQ(graph.type(*graph.findNamed("u")).shape, (Shape{4, 5}));
  EXPECT_EQ(graph.type(*graph.findNamed("v.T")).shape, (Shape{5, 4}));
  EXPECT_TRUE(params.count("w") && params.count("u") && params.count("v.T"));
}

std::string importError(const ModelMaker &m) {
  std::optional<OnnxImportError> e = importFailure(m, "bad.onnx");
  return e ? e->what() : "";
}

// `m` becomes y = Mod(a, b) {fmod} of inputs of `type` and shape [size];
// with `sameOperand`, y = Mod(a, a).
void makeMod(ModelMaker &m, int type, int64_t size, int64_t fmod, bool sameOperand = false) {
  m.input("a", type, {size});
  if (!sameOperand)
    m.input("b", type, {size});
  setInt(m.node("Mod", "mod", {"a", sameOperand ? "a" : "b"}, {"y"}), "fmod", fmod);
  m.output("y");
}

TEST(OnnxComposite, ModFollowsTheDivisorOrTheDividendSign) {
  Tensor a = Tensor::of<int64_t>({6}, {-7, 7, -7, 7, 5, 0});
  Tensor b = Tensor::of<int64_t>({6}, {3, -3, -3, 3, 0, 4});
  for (int64_t fmod : {0, 1}) {
    ModelMaker m;
    makeMod(m, onnx::TensorProto::INT64, 6, fmod);
    Tensor y = runBoth(m, {{"a", a}, {"b", b}}).at("y");
    // x mod 0 is x (stepc's x / 0 is 0).
    std::vector<int64_t> want = fmod ? std::vector<int64_t>{-1, 1, -1, 1, 5, 0}
                                     : std::vector<int64_t>{2, -2, -1, 1, 5, 0};
    EXPECT_EQ(y, Tensor::of<int64_t>({6}, want)) << "fmod " << fmod;
  }
  // Floats: fmod = 1 is C's fmod, exact where a - trunc(a/b) b is not (a
  // quotient of 1e30 / 3 is far beyond 2^24).
  Tensor x = Tensor::of<float>({5}, {-4.25f, 7.5f, 5.0f, -0.5f, 1e30f});
  Tensor d = Tensor::of<float>({5}, {2.0f, -3.0f, 8.0f, 0.25f, 3.0f});
  ModelMaker m;
  makeMod(m, onnx::TensorProto::FLOAT, 5, 1);
  Tensor y = runBoth(m, {{"a", x}, {"b", d}}).at("y");
  for (int64_t i = 0; i < 5; ++i)
    EXPECT_EQ(y.data<float>()[i], std::fmod(x.data<float>()[i], d.data<float>()[i])) << i;
  // fmod = 0 is defined for integers only.
  ModelMaker floatPython;
  makeMod(floatPython, onnx::TensorProto::FLOAT, 5, 0, true);
  EXPECT_NE(importError(floatPython).find("a f32 input needs fmod = 1"), std::string::npos);
  // Unsigned: the remainder of the unsigned values.
  for (int64_t fmod : {0, 1}) {
    ModelMaker u;
    makeMod(u, onnx::TensorProto::UINT32, 2, fmod);
    Tensor ua = Tensor::of<uint32_t>({2}, {4000000000u, 10});
    Tensor ub = Tensor::of<uint32_t>({2}, {7, 4000000000u});
    EXPECT_EQ(runBoth(u, {{"a", ua}, {"b", ub}}).at("y"),
              Tensor::of<uint32_t>({2}, {4000000000u % 7, 10}));
  }
  ModelMaker bad;
  makeMod(bad, onnx::TensorProto::INT64, 6, 2, true);
  EXPECT_NE(importError(bad).find("attribute 'fmod' must be 0 or 1"), std::string::npos);
}

TEST(OnnxComposite, RoundingAndInverseTrigonometry) {
  // 0.49999997 and 2^23 + 1: x + 0.5 rounds before any floor could see them.
  Tensor x = Tensor::of<float>({10}, {-2.5f, -1.5f, -0.7f, -0.5f, 0.5f, 0.7f, 1.5f, 2.5f,
                                      0.49999997f, 8388609.0f});
  ModelMaker m;
  m.input("x", onnx::TensorProto::FLOAT, {10});
  for (const char *op : {"Floor", "Ceil", "Round", "Atan", "Asinh"})
    m.node(op, op, {"x"}, {op}), m.output(op);
  m.node("Mul", "scale", {"x", "third"}, {"small"});
  addInitializer(m, "third", Tensor::of<float>({}, {0.3f}));
  for (const char *op : {"Asin", "Acos", "Atanh"})
    m.node(op, op, {"small"}, {op}), m.output(op);
  TensorMap out = runBoth(m, {{"x", x}});
  for (int64_t i = 0; i < 8; ++i) {
    double v = x.real(i), s = 0.3f * float(v);
    EXPECT_EQ(out.at("Floor").real(i), std::floor(v));
    EXPECT_EQ(out.at("Ceil").real(i), std::ceil(v));
    EXPECT_EQ(out.at("Round").real(i), std::nearbyint(v)) << v; // half to even
    EXPECT_NEAR(out.at("Atan").real(i), std::atan(v), 1e-6);
    EXPECT_NEAR(out.at("Asinh").real(i), std::asinh(v), 1e-6);
    EXPECT_NEAR(out.at("Asin").real(i), std::asin(s), 1e-6);
    EXPECT_NEAR(out.at("Acos").real(i), std::acos(s), 1e-6);
    EXPECT_NEAR(out.at("Atanh").real(i), std::atanh(s), 1e-6);
  }
  for (int64_t i = 8; i < 10; ++i) { // beyond the inverse functions' domains
    double v = x.real(i);
    EXPECT_EQ(out.at("Floor").real(i), std::floor(v));
    EXPECT_EQ(out.at("Ceil").real(i), std::ceil(v));
    EXPECT_EQ(out.at("Round").real(i), std::nearbyint(v)) << v;
  }
}

// `m` becomes a model of one Einsum node of `equation`: f32 inputs a, b (as
// many as `shapes`), output y. (A ModelMaker is not copied: it points into
// itself.)
void makeEinsum(ModelMaker &m, const std::string &equation,
                const std::vector<std::vector<int64_t>> &shapes) {
  std::vector<std::string> operands;
  for (size_t k = 0; k < shapes.size(); ++k) {
    operands.push_back(std::string(1, char('a' + k)));
    m.input(operands.back(), onnx::TensorProto::FLOAT, shapes[k]);
  }
  setString(m.node("Einsum", "e", operands, {"y"}), "equation", equation);
  m.output("y");
}

// Checks y, of rank 3, against the sum over one contracted label:
// y[o0, o1, o2] = the sum of term(o0, o1, o2, s) for s < summed.
void expectContraction(const Tensor &y, int64_t summed,
                       const std::function<double(int64_t, int64_t, int64_t, int64_t)> &term) {
  const Shape &shape = y.shape();
  ASSERT_EQ(shape.size(), 3u);
  for (int64_t o0 = 0; o0 < shape[0]; ++o0)
    for (int64_t o1 = 0; o1 < shape[1]; ++o1)
      for (int64_t o2 = 0; o2 < shape[2]; ++o2) {
        double want = 0;
        for (int64_t s = 0; s < summed; ++s)
          want += term(o0, o1, o2, s);
        EXPECT_NEAR(y.real((o0 * shape[1] + o1) * shape[2] + o2), want, 1e-5)
            << "at [" << o0 << ", " << o1 << ", " << o2 << "]";
      }
}

// Einsum becomes transposes, reshapes and one batched matmul per pair.
TEST(OnnxComposite, EinsumContractsLikeNumpy) {
  Tensor a = testing::randomTensor(DType::F32, {3, 5, 7}, 1);
  Tensor b = testing::randomTensor(DType::F32, {7, 3, 2}, 2);
  ModelMaker m;
  makeEinsum(m, "bij, jbk -> kbi", {{3, 5, 7}, {7, 3, 2}});
  Tensor y = runBoth(m, {{"a", a}, {"b", b}}).at("y");
  ASSERT_EQ(y.shape(), (Shape{2, 3, 5}));
  expectContraction(y, 7, [&](int64_t k, int64_t bb, int64_t i, int64_t j) {
    return a.real((bb * 5 + i) * 7 + j) * b.real((j * 3 + bb) * 2 + k);
  });
  expectGradients(m, {{"a", a}, {"b", b}}, {"a", "b"});
  ModelMaker bad;
  makeEinsum(bad, "ij->i", {{3, 5, 7}});
  EXPECT_NE(importError(bad).find("term 'ij' has 2 labels but operand 0 is f32[3,5,7]"),
            std::string::npos);
}

// "..." axes align to the right across operands of different ellipsis ranks
// (the labels of a short ellipsis are the last of the longest), never clash
// with upper-case user labels, and broadcast from 1; labelled axes do not.
TEST(OnnxComposite, EinsumEllipsisBroadcastsAndKeepsUserLabels) {
  Tensor a = testing::randomTensor(DType::F32, {3, 2, 4}, 4); // ... = [3, 2]
  Tensor b = testing::randomTensor(DType::F32, {1, 4, 5}, 5); // ... = [1] -> [2]
  ModelMaker m;
  makeEinsum(m, "...A,...AB->...B", {{3, 2, 4}, {1, 4, 5}});
  Tensor y = runBoth(m, {{"a", a}, {"b", b}}).at("y");
  ASSERT_EQ(y.shape(), (Shape{3, 2, 5}));
  expectContraction(y, 4, [&](int64_t i, int64_t j, int64_t k, int64_t l) {
    return a.real((i * 2 + j) * 4 + l) * b.real(l * 5 + k);
  });
  // A labelled axis of size 1 against one of size 4 is an error naming it.
  ModelMaker bad;
  makeEinsum(bad, "ij,jk->ik", {{3, 4}, {1, 5}});
  EXPECT_NE(importError(bad).find("label 'j' names axes of sizes 4 and 1"), std::string::npos)
      << importError(bad);
}

// 8/16-bit integers and f16 bit patterns live in int32_data: a value outside
// the element type's range is a corrupt file, reported, not wrapped.
TEST(OnnxImport, NarrowTypedDataIsRangeChecked) {
  for (auto [type, bad] : {std::pair{onnx::TensorProto::FLOAT16, 70000},
                           std::pair{onnx::TensorProto::INT8, 200},
                           std::pair{onnx::TensorProto::UINT8, -1}}) {
    ModelMaker m;
    m.input("x", type, {2});
    m.node("Add", "add", {"x", "c"}, {"y"});
    auto *c = m.graph->add_initializer();
    c->set_name("c");
    c->set_data_type(type);
    c->add_dims(2);
    c->add_int32_data(1);
    c->add_int32_data(bad);
    m.output("y");
    std::string message;
    try {
      importOnnxBytes(m.bytes(), "narrow.onnx");
    } catch (const Error &e) {
      message = e.what();
    }
    EXPECT_NE(message.find(fmt::format("int32_data[1] = {} is out of range", bad)),
              std::string::npos)
        << message;
  }
}

// Resize: linear is a matmul per axis (gradients reach the input), nearest
// a gather; both agree between the interpreter and the CPU backend.
TEST(OnnxComposite, ResizeLinearAndNearest) {
  Tensor x = testing::randomTensor(DType::F32, {1, 2, 3, 5}, 3);
  for (const char *mode : {"linear", "nearest", "cubic"}) {
    ModelMaker m;
    m.input("x", onnx::TensorProto::FLOAT, {1, 2, 3, 5});
    auto *n = m.node("Resize", "r", {"x", "", "", "sizes"}, {"y"});
    setString(n, "mode", mode);
    setString(n, "coordinate_transformation_mode", "align_corners");
    addInitializer(m, "sizes", Tensor::of<int64_t>({4}, {1, 2, 5, 4}));
    m.output("y");
    Tensor y = runBoth(m, {{"x", x}}).at("y");
    ASSERT_EQ(y.shape(), (Shape{1, 2, 5, 4})) << mode;
    // align_corners keeps the corners.
    for (int64_t ch = 0; ch < 2; ++ch) {
      EXPECT_NEAR(y.real(ch * 20), x.real(ch * 15), 1e-6) << mode;
      EXPECT_NEAR(y.real(ch * 20 + 19), x.real(ch * 15 + 14), 1e-6) << mode;
    }
    if (std::string(mode) == "linear") {
      // Row 2 of 5 lies at input row 1; column 1 of 4 at input column 4/3.
      double want = x.real(5 + 1) * (2.0 / 3) + x.real(5 + 2) * (1.0 / 3);
      EXPECT_NEAR(y.real(2 * 4 + 1), want, 1e-6);
      expectGradients(m, {{"x", x}}, {"x"});
    }
  }
  ModelMaker bad;
  bad.input("x", onnx::TensorProto::FLOAT, {1, 2, 3, 5});
  setString(bad.node("Resize", "r", {"x", "", "", "sizes"}, {"y"}), "mode", "area");
  addInitializer(bad, "sizes", Tensor::of<int64_t>({4}, {1, 2, 5, 4}));
  bad.output("y");
  EXPECT_NE(importError(bad).find("mode 'area' is not one of nearest, linear, cubic"),
            std::string::npos);
}

TEST(OnnxComposite, ScatterElementsReductionsAndBadIndices) {
  Tensor data = testing::randomTensor(DType::F32, {3, 5}, 4);
  Tensor updates = testing::randomTensor(DType::F32, {2, 4}, 5);
  Tensor indices = Tensor::of<int64_t>({2, 4}, {1, -1, 3, 1, 1, 0, 3, 2});
  for (const char *reduction : {"none", "add", "mul"}) {
    ModelMaker m;
    m.input("data", onnx::TensorProto::FLOAT, {3, 5});
    m.input("indices", onnx::TensorProto::INT64, {2, 4});
    m.input("updates", onnx::TensorProto::FLOAT, {2, 4});
    auto *n = m.node("ScatterElements", "s", {"data", "indices", "updates"}, {"y"});
    setInt(n, "axis", 1);
    setString(n, "reduction", reduction);
    m.output("y");
    TensorMap in{{"data", data}, {"indices", indices}, {"updates", updates}};
    Tensor y = runBoth(m, in).at("y");
    Tensor want = data;
    for (int64_t i = 0; i < 2; ++i)
      for (int64_t j = 0; j < 4; ++j) {
        int64_t k = indices.data<int64_t>()[i * 4 + j];
        k = k < 0 ? k + 5 : k;
        double u = updates.real(i * 4 + j);
        double old = want.real(i * 5 + k);
        std::string r = reduction;
        want.setReal(i * 5 + k, r == "none" ? u : r == "add" ? old + u : old * u);
      }
    for (int64_t i = 0; i < 15; ++i)
      EXPECT_NEAR(y.real(i), want.real(i), 1e-6) << reduction << " at " << i;
    expectGradients(m, in, {"data", "updates"});
    // An index out of range is an error when the step runs.
    Tensor outOfRange = indices;
    outOfRange.data<int64_t>()[2] = 5;
    OnnxModel model = importOnnxBytes(m.bytes(), "scatter.onnx");
    in["indices"] = outOfRange;
    EXPECT_THROW(interpret(model.graph, in, model.params), Error);
  }
  ModelMaker bad;
  bad.input("data", onnx::TensorProto::FLOAT, {3, 5});
  bad.input("indices", onnx::TensorProto::INT64, {2, 4});
  setString(bad.node("ScatterElements", "s", {"data", "indices", "data"}, {"y"}), "reduction",
            "sum");
  bad.output("y");
  EXPECT_NE(importError(bad).find("reduction 'sum' is not one of"), std::string::npos);
}

TEST(OnnxComposite, GatherNDAndTopK) {
  Tensor data = testing::randomTensor(DType::F32, {3, 4, 2}, 6);
  Tensor indices = Tensor::of<int64_t>({2, 2}, {2, -1, 0, 1});
  ModelMaker m;
  m.input("data", onnx::TensorProto::FLOAT, {3, 4, 2});
  m.input("indices", onnx::TensorProto::INT64, {2, 2});
  m.node("GatherND", "g", {"data", "indices"}, {"y"});
  m.output("y");
  TensorMap in{{"data", data}, {"indices", indices}};
  Tensor y = runBoth(m, in).at("y");
  ASSERT_EQ(y.shape(), (Shape{2, 2}));
  for (int64_t k = 0; k < 2; ++k) {
    EXPECT_EQ(y.real(k), data.real((2 * 4 + 3) * 2 + k));
    EXPECT_EQ(y.real(2 + k), data.real((0 * 4 + 1) * 2 + k));
  }
  expectGradients(m, in, {"data"});

  Tensor x = Tensor::of<float>({2, 5}, {3, 1, 4, 1, 5, 9, 2, 6, 5, 3});
  ModelMaker t;
  t.input("x", onnx::TensorProto::FLOAT, {2, 5});
  t.node("TopK", "top", {"x", "k"}, {"values", "indices"});
  addInitializer(t, "k", Tensor::of<int64_t>({1}, {3}));
  t.output("values");
  t.output("indices");
  TensorMap out = runBoth(t, {{"x", x}});
  EXPECT_EQ(out.at("values"), Tensor::of<float>({2, 3}, {5, 4, 3, 9, 6, 5}));
  EXPECT_EQ(out.at("indices"), Tensor::of<int64_t>({2, 3}, {4, 2, 0, 0, 2, 3}));
}

// Recurrent cells are unrolled into graph ops: their weights get gradients.
TEST(OnnxComposite, LstmUnrolledTrains) {
  Tensor x = testing::randomTensor(DType::F32, {3, 2, 5}, 7);
  Tensor w = testing::randomTensor(DType::F32, {2, 16, 5}, 8);
  Tensor r = testing::randomTensor(DType::F32, {2, 16, 4}, 9);
  ModelMaker m;
  m.input("x", onnx::TensorProto::FLOAT, {3, 2, 5});
  m.input("w", onnx::TensorProto::FLOAT, {2, 16, 5});
  m.input("r", onnx::TensorProto::FLOAT, {2, 16, 4});
  auto *n = m.node("LSTM", "lstm", {"x", "w", "r"}, {"y", "h", "c"});
  setInt(n, "hidden_size", 4);
  setString(n, "direction", "bidirectional");
  m.output("y");
  m.output("h");
  m.output("c");
  TensorMap in{{"x", x}, {"w", w}, {"r", r}};
  TensorMap out = runBoth(m, in);
  EXPECT_EQ(out.at("y").shape(), (Shape{3, 2, 2, 4}));
  EXPECT_EQ(out.at("h").shape(), (Shape{2, 2, 4}));
  // The forward direction's last output is Y_h's first row.
  for (int64_t i = 0; i < 8; ++i)
    EXPECT_EQ(out.at("h").real(i), out.at("y").real(2 * 16 + i));
  expectGradients(m, in, {"x", "w", "r"});
}

// Ops whose result shape depends on values need those values at import.
TEST(OnnxComposite, ValueDependentShapesAreComputedAtImport) {
  ModelMaker m;
  m.input("x", onnx::TensorProto::FLOAT, {6});
  m.node("Unique", "u", {"x"}, {"y", "first", "inverse", "counts"});
  for (const char *out : {"y", "first", "inverse", "counts"})
    m.output(out);
  // The input is needed at import.
  std::optional<OnnxImportError> e = importFailure(m, "unique.onnx");
  ASSERT_TRUE(e);
  ASSERT_EQ(e->problems().size(), 1u) << e->what();
  EXPECT_EQ(e->problems()[0].kind, OnnxProblem::Kind::StaticInput);
  OnnxImportOptions options;
  options.inputValues["x"] = Tensor::of<float>({6}, {2, 1, 1, 3, 4, 3});
  OnnxModel model = importOnnxBytes(m.bytes(), "unique.onnx", options);
  TensorMap out = interpret(model.graph, {}, model.params);
  EXPECT_EQ(out.at("y"), Tensor::of<float>({4}, {1, 2, 3, 4}));
  EXPECT_EQ(out.at("first"), Tensor::of<int64_t>({4}, {1, 0, 3, 4}));
  EXPECT_EQ(out.at("inverse"), Tensor::of<int64_t>({6}, {1, 0, 0, 2, 3, 2}));
  EXPECT_EQ(out.at("counts"), Tensor::of<int64_t>({4}, {2, 1, 2, 1}));
}

TEST(OnnxComposite, NonMaxSuppressionKeepsTheBestBoxes) {
  // Box 1 overlaps box 0 (IoU 0.81), box 2 is apart.
  Tensor boxes = Tensor::of<float>({1, 3, 4}, {0, 0, 1, 1, 0, 0.1f, 1, 1.1f, 0, 2, 1, 3});
  Tensor scores = Tensor::of<float>({1, 1, 3}, {0.9f, 0.95f, 0.3f});
  ModelMaker m;
  m.input("boxes", onnx::TensorProto::FLOAT, {1, 3, 4});
  m.input("scores", onnx::TensorProto::FLOAT, {1, 1, 3});
  m.node("NonMaxSuppression", "nms", {"boxes", "scores", "max", "iou"}, {"selected"});
  addInitializer(m, "max", Tensor::of<int64_t>({1}, {3}));
  addInitializer(m, "iou", Tensor::of<float>({1}, {0.5f}));
  m.output("selected");
  OnnxImportOptions options;
  options.inputValues = {{"boxes", boxes}, {"scores", scores}};
  OnnxModel model = importOnnxBytes(m.bytes(), "nms.onnx", options);
  TensorMap out = interpret(model.graph, {}, model.params);
  EXPECT_EQ(out.at("selected"), Tensor::of<int64_t>({2, 3}, {0, 0, 1, 0, 0, 2}));
}

// BitShift: a shift by the width or more gives 0; signed inputs are refused.
TEST(OnnxComposite, BitShiftOnUnsignedIntegers) {
  for (const char *direction : {"LEFT", "RIGHT"}) {
    ModelMaker m;
    m.input("x", onnx::TensorProto::UINT8, {4});
    m.input("y", onnx::TensorProto::UINT8, {4});
    setString(m.node("BitShift", "s", {"x", "y"}, {"z"}), "direction", direction);
    m.output("z");
    Tensor x = Tensor::fromReals(DType::U8, {4}, {200, 3, 255, 1});
    Tensor y = Tensor::fromReals(DType::U8, {4}, {1, 2, 8, 7});
    Tensor z = runBoth(m, {{"x", x}, {"y", y}}).at("z");
    std::vector<double> want = std::string(direction) == "LEFT"
                                   ? std::vector<double>{144, 12, 0, 128} // 400 wraps to 144
                                   : std::vector<double>{100, 0, 0, 0};
    EXPECT_EQ(z.reals(), want) << direction;
  }
  ModelMaker bad;
  bad.input("x", onnx::TensorProto::INT32, {4});
  setString(bad.node("BitShift", "s", {"x", "x"}, {"z"}), "direction", "LEFT");
  bad.output("z");
  EXPECT_NE(importError(bad).find("expected unsigned integers of one type, found i32[4]"),
            std::string::npos)
      << importError(bad);
}

// QuantizeLinear rounds half to even and saturates; DequantizeLinear undoes
// the zero point and scale.
TEST(OnnxComposite, QuantizeAndDequantizeLinear) {
  ModelMaker m;
  m.input("x", onnx::TensorProto::FLOAT, {6});
  m.node("QuantizeLinear", "q", {"x", "scale", "zero"}, {"q"});
  m.node("DequantizeLinear", "d", {"q", "scale", "zero"}, {"d"});
  addInitializer(m, "scale", Tensor::of<float>({}, {2.0f}));
  addInitializer(m, "zero", Tensor::fromReals(DType::U8, {}, {128}));
  m.output("q");
  m.output("d");
  Tensor x = Tensor::of<float>({6}, {1.0f, 3.0f, -5.0f, 1000.0f, -1000.0f, 7.2f});
  TensorMap out = runBoth(m, {{"x", x}});
  EXPECT_EQ(out.at("q").reals(), (std::vector<double>{128, 130, 126, 255, 0, 132}));
  EXPECT_EQ(out.at("d").reals(), (std::vector<double>{0, 4, -4, 254, -256, 8}));
}

// ReverseSequence reverses each entry's first sequence_lens elements; a
// length outside 0..T is an error (at import when known, else when the model
// runs), never a read of another entry's data.
TEST(OnnxComposite, ReverseSequenceChecksItsLengths) {
  auto model = [](bool lensKnown, std::vector<int64_t> lens) {
    ModelMaker m;
    m.input("x", onnx::TensorProto::FLOAT, {2, 3});
    if (lensKnown)
      addInitializer(m, "lens", Tensor::of<int64_t>({2}, lens));
    else
      m.input("lens", onnx::TensorProto::INT64, {2});
    auto *n = m.node("ReverseSequence", "r", {"x", "lens"}, {"y"});
    setInt(n, "time_axis", 1);
    setInt(n, "batch_axis", 0);
    m.output("y");
    return m;
  };
  Tensor x = Tensor::of<float>({2, 3}, {1, 2, 3, 4, 5, 6});
  EXPECT_EQ(runBoth(model(true, {3, 2}), {{"x", x}}).at("y").reals(),
            (std::vector<double>{3, 2, 1, 5, 4, 6}));
  EXPECT_NE(importError(model(true, {4, 1})).find("sequence_lens[0] is 4, expected 0 to 3"),
            std::string::npos)
      << importError(model(true, {4, 1}));
  OnnxModel runtime = importOnnxBytes(model(false, {}).bytes(), "reverse.onnx");
  TensorMap inputs = {{"x", x}, {"lens", Tensor::of<int64_t>({2}, {4, 1})}};
  EXPECT_NE(testing::errorOf([&] { interpret(runtime.graph, inputs, runtime.params); })
                .find("out of range"),
            std::string::npos);
  EXPECT_NE(testing::errorOf([&] {
              runOnBackend(findBackend("cpu", "test"), runtime.graph, inputs, runtime.params);
            }).find("out of range"),
            std::string::npos);
}

// QLinearMatMul's a_scale per row of A scales rows (b's per column
// columns); DynamicQuantizeLinear of all zeros gives zeros, not 0/0.
TEST(OnnxComposite, QuantizedProductScalesPerRowAndZerosQuantize) {
  ModelMaker m;
  m.input("a", onnx::TensorProto::UINT8, {2, 2});
  m.input("b", onnx::TensorProto::UINT8, {2, 3});
  addInitializer(m, "a_scale", Tensor::of<float>({2}, {1.0f, 2.0f}));
  addInitializer(m, "one", Tensor::of<float>({}, {1.0f}));
  addInitializer(m, "zero", Tensor::fromReals(DType::U8, {}, {0}));
  m.node("QLinearMatMul", "q", {"a", "a_scale", "zero", "b", "one", "zero", "one", "zero"},
         {"y"});
  m.output("y");
  Tensor a = Tensor::fromReals(DType::U8, {2, 2}, {1, 2, 3, 4});
  Tensor b = Tensor::fromReals(DType::U8, {2, 3}, {1, 0, 2, 0, 1, 1});
  EXPECT_EQ(runBoth(m, {{"a", a}, {"b", b}}).at("y").reals(),
            (std::vector<double>{1, 2, 4, 6, 8, 20}));

  ModelMaker zeros;
  zeros.input("x", onnx::TensorProto::FLOAT, {4});
  zeros.node("DynamicQuantizeLinear", "d", {"x"}, {"y", "scale", "zero_point"});
  for (const char *name : {"y", "scale", "zero_point"})
    zeros.output(name);
  TensorMap out = runBoth(zeros, {{"x", Tensor::of<float>({4}, {0, 0, 0, 0})}});
  EXPECT_EQ(out.at("y").reals(), (std::vector<double>{0, 0, 0, 0}));
  EXPECT_EQ(out.at("scale").real(0), 0);
  EXPECT_EQ(out.at("zero_point").real(0), 0);
}

TEST(OnnxComposite, MomentumNeedsItsAttributes) {
  ModelMaker m;
  m.input("r", onnx::TensorProto::FLOAT, {1});
  m.input("t", onnx::TensorProto::INT64, {1});
  m.input("x", onnx::TensorProto::FLOAT, {2});
  auto *n = m.node("Momentum", "opt", {"r", "t", "x", "x", "x"}, {"x_new", "v_new"});
  n->set_domain("ai.onnx.preview.training");
  setString(n, "mode", "standard");
  m.output("x_new");
  EXPECT_NE(importError(m).find("Momentum needs the attribute 'alpha'"), std::string::npos)
      << importError(m);
}

// Det by cofactor expansion: a 3x3 batch against its closed form, and a
// refusal past 5x5 that names the size.
TEST(OnnxComposite, DetOfSmallMatrices) {
  Tensor x = testing::randomTensor(DType::F64, {2, 3, 3}, 11);
  ModelMaker m;
  m.input("x", onnx::TensorProto::DOUBLE, {2, 3, 3});
  m.node("Det", "det", {"x"}, {"d"});
  m.output("d");
  Tensor d = runBoth(m, {{"x", x}}).at("d");
  ASSERT_EQ(d.shape(), (Shape{2}));
  for (int64_t b = 0; b < 2; ++b) {
    auto a = [&](int i, int j) { return x.real(b * 9 + i * 3 + j); };
    double want = a(0, 0) * (a(1, 1) * a(2, 2) - a(1, 2) * a(2, 1)) -
                  a(0, 1) * (a(1, 0) * a(2, 2) - a(1, 2) * a(2, 0)) +
                  a(0, 2) * (a(1, 0) * a(2, 1) - a(1, 1) * a(2, 0));
    EXPECT_NEAR(d.real(b), want, 1e-12);
  }
  ModelMaker big;
  big.input("x", onnx::TensorProto::FLOAT, {6, 6});
  big.node("Det", "det", {"x"}, {"d"});
  big.output("d");
  EXPECT_NE(importError(big).find("the determinant of 6x6 matrices"), std::string::npos)
      << importError(big);
}

} // namespace
} // namespace stepc
