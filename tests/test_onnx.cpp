// ONNX import: models from Debian's libonnx-testdata against their reference
// outputs, the one-message report of unsupported models, and malformed files.
#include "stepc/autodiff.h"
#include "stepc/onnx.h"

#include "testing.h"

#include <onnx/onnx_pb.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

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
  try {
    importOnnxBytes(m.bytes(), "handmade.onnx");
    FAIL() << "expected the import to fail";
  } catch (const OnnxImportError &e) {
    std::string message = e.what();
    SCOPED_TRACE(message);
    EXPECT_EQ(message.find('\n'), message.find("problems:") + 9);
    for (const char *expected :
         {"handmade.onnx", "FancyOp node 'fancy'", "no mapping for ONNX operator FancyOp",
          "Pad node 'wrapped'", "mode 'wrap'", "Cast node 'to_complex'", "complex64",
          "Dropout node 'train_drop'", "training mode", "graph input 'h'"})
      EXPECT_NE(message.find(expected), std::string::npos) << expected;
    EXPECT_EQ(message.find("'fine'"), std::string::npos);
    EXPECT_EQ(e.problems().size(), 5u);
  }
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
  try {
    importOnnxBytes(m.bytes(), "typed.onnx");
    FAIL() << "expected the import to fail";
  } catch (const OnnxImportError &e) {
    std::string message = e.what();
    SCOPED_TRACE(message);
    EXPECT_NE(message.find("Softmax node 'soft'"), std::string::npos);
    EXPECT_NE(message.find("attribute 'axis' must be INT, found STRING"), std::string::npos);
    EXPECT_NE(message.find("graph input 'odd' has element type 99 (unknown to ONNX)"),
              std::string::npos);
    EXPECT_EQ(message.find("element type element type"), std::string::npos);
  }
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
  try {
    importOnnxBytes(m.bytes(), "dynamic.onnx");
    FAIL();
  } catch (const OnnxImportError &e) {
    EXPECT_NE(std::string(e.what()).find("dynamic dimension 'batch'"), std::string::npos)
        << e.what();
  }
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
  t.set_data_type(onnx::TensorProto::UINT8);
  t.add_dims(2);
  t.set_raw_data(std::string("\x01\x02", 2));
  try {
    parseOnnxTensor(t.SerializeAsString(), "t.pb");
    FAIL();
  } catch (const OnnxImportError &e) {
    ASSERT_EQ(e.problems().size(), 1u);
    EXPECT_EQ(e.problems()[0].kind, OnnxProblem::Kind::DType);
    EXPECT_EQ(e.problems()[0].typeName, "uint8");
  }
  // A shape that claims more data than the proto holds.
  onnx::TensorProto big;
  big.set_data_type(onnx::TensorProto::FLOAT);
  big.add_dims(int64_t(1) << 40);
  big.set_raw_data("abcd");
  EXPECT_THROW(parseOnnxTensor(big.SerializeAsString(), "big.pb"), Error);
}

} // namespace
} // namespace stepc
