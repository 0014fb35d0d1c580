// `stepc train` as a user runs it: a .sg model of one's own on .npy arrays,
// checkpoint and resume, an imported ONNX model with its weights found
// beside it, and the errors for bad data. The data are tests/cli/train/.
#include "testing.h"

#include "stepc/executable.h"
#include "stepc/npy.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <regex>
#include <unistd.h>

namespace stepc {
namespace {

namespace fs = std::filesystem;

using testing::CommandResult;

CommandResult stepc(const std::string &arguments) { return testing::stepcCommand(arguments); }

class TrainCli : public ::testing::Test {
protected:
  void SetUp() override {
    const char *bin = std::getenv("STEPC_BIN");
    if (!bin || !fs::exists(bin))
      GTEST_SKIP() << "the stepc tool is not built";
    work = fs::temp_directory_path() /
           fmt::format("stepc_train_{}_{}", ::getpid(),
                       ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(work);
    fs::create_directories(work);
  }
  void TearDown() override {
    if (!work.empty() && !HasFailure())
      fs::remove_all(work);
  }

  std::string data(const std::string &file) const {
    return testing::sourcePath("tests/cli/train/" + file);
  }
  // The blobs model on its data: --data and --eval-data for x and y.
  std::string blobsArguments() const {
    return fmt::format("{} --loss loss --data x={} --data y={}", data("blobs.sg"), data("x.npy"),
                       data("y.npy"));
  }
  fs::path work;
};

// The mean training loss of each epoch, from the progress lines' ends.
std::vector<double> epochLosses(const std::string &output) {
  static const std::regex line(R"(epoch \d+/\d+ (\d+)/\1 loss ([0-9.]+))");
  std::vector<double> losses;
  for (auto it = std::sregex_iterator(output.begin(), output.end(), line);
       it != std::sregex_iterator(); ++it)
    losses.push_back(std::stod((*it)[2]));
  return losses;
}

TEST_F(TrainCli, UserGraphOnNpyData) {
  // --batch 32 differs from the graph's 16: the graph is rebatched; 256 rows
  // make 8 whole batches, 64 evaluation rows 2.
  CommandResult r = stepc(fmt::format("train {} --eval-data x={} --eval-data y={} --batch 32 "
                                      "--epochs 3 --lr 0.01 --seed 7",
                                      blobsArguments(), data("eval_x.npy"), data("eval_y.npy")));
  ASSERT_EQ(r.status, 0) << r.output;
  std::vector<double> losses = epochLosses(r.output);
  ASSERT_EQ(losses.size(), 3u) << r.output;
  EXPECT_LT(losses[2], losses[0]) << r.output;
  EXPECT_NE(r.output.find("batch 32, 8 steps per epoch"), std::string::npos) << r.output;
  std::smatch accuracy;
  ASSERT_TRUE(std::regex_search(r.output, accuracy,
                                std::regex(R"(epoch 3/3: eval loss [0-9.]+  accuracy ([0-9.]+)%)")))
      << r.output;
  EXPECT_GT(std::stod(accuracy[1]), 80.0) << r.output;
}

// The same run in bf16 and f16 mixed precision learns the blobs too; a step
// graph of each prints with f16's loss-scale state alone.
TEST_F(TrainCli, MixedPrecision) {
  for (const char *half : {"bf16", "f16"}) {
    SCOPED_TRACE(half);
    CommandResult r = stepc(fmt::format("train {} --eval-data x={} --eval-data y={} --epochs 3 "
                                        "--lr 0.01 --seed 7 --mixed-precision {}",
                                        blobsArguments(), data("eval_x.npy"),
                                        data("eval_y.npy"), half));
    ASSERT_EQ(r.status, 0) << r.output;
    std::smatch accuracy;
    ASSERT_TRUE(std::regex_search(r.output, accuracy,
                                  std::regex(R"(epoch 3/3: eval loss [0-9.]+  accuracy ([0-9.]+)%)")))
        << r.output;
    EXPECT_GT(std::stod(accuracy[1]), 80.0) << r.output;
    CommandResult step = stepc(fmt::format("train-step {} --loss loss --optimizer adam "
                                           "--mixed-precision {}",
                                           data("blobs.sg"), half));
    ASSERT_EQ(step.status, 0) << step.output;
    EXPECT_EQ(step.output.find("loss_scale") != std::string::npos, std::string(half) == "f16")
        << step.output;
  }
  std::string sg = data("blobs.sg");
  for (const std::string &command :
       {"train-step " + sg + " --loss loss", "train " + sg + " --loss loss",
        "bench " + sg + " --train", std::string("demo")}) {
    SCOPED_TRACE(command);
    CommandResult r = stepc(command + " --mixed-precision fp16");
    EXPECT_EQ(r.status, 1) << r.output;
    EXPECT_NE(r.output.find("--mixed-precision: unknown precision 'fp16'; expected bf16 or f16"),
              std::string::npos)
        << r.output;
  }
  for (const char *flags : {"--loss-scale 1024", "--mixed-precision bf16 --growth-interval 10"}) {
    SCOPED_TRACE(flags);
    CommandResult r = stepc(fmt::format("train-step {} --loss loss {}", sg, flags));
    EXPECT_EQ(r.status, 1) << r.output;
    EXPECT_NE(r.output.find("applies to --mixed-precision f16 only"), std::string::npos)
        << r.output;
  }
  CommandResult scaled = stepc(fmt::format(
      "train-step {} --loss loss --mixed-precision f16 --loss-scale 1024 --growth-interval 10", sg));
  EXPECT_EQ(scaled.status, 0) << scaled.output;
}

TEST_F(TrainCli, PartialBatchIsDroppedAndSaid) {
  CommandResult r = stepc(fmt::format("train {} --batch 48 --epochs 1", blobsArguments()));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("each epoch leaves out 16 rows (the shuffle decides which): too few "
                          "for another batch of 48"),
            std::string::npos)
      << r.output;
}

TEST_F(TrainCli, ResumeGivesTheParamsOfAnUninterruptedRun) {
  std::string whole = (work / "whole.safetensors").string();
  std::string first = (work / "first.safetensors").string();
  std::string resumed = (work / "resumed.safetensors").string();
  std::string common = blobsArguments() + " --lr 0.01 --seed 3";
  CommandResult r = stepc(fmt::format("train {} --epochs 3 --checkpoint {}", common, whole));
  ASSERT_EQ(r.status, 0) << r.output;
  r = stepc(fmt::format("train {} --epochs 1 --checkpoint {}", common, first));
  ASSERT_EQ(r.status, 0) << r.output;
  r = stepc(fmt::format("train {} --epochs 3 --resume {} --checkpoint {}", common, first, resumed));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("1 epoch (16 steps) done"), std::string::npos) << r.output;
  // Params, Adam's moments and the step counter, bit for bit.
  std::map<std::string, Tensor> expected = readSafetensors(whole),
                                actual = readSafetensors(resumed);
  EXPECT_EQ(actual.size(), expected.size());
  EXPECT_TRUE(expected.count("w1.m") && expected.count("step"));
  for (const auto &[name, value] : expected) {
    ASSERT_TRUE(actual.count(name)) << name;
    EXPECT_TRUE(actual.at(name) == value) << name;
  }
  EXPECT_EQ(expected.at("step").real(0), 48);

  // A checkpoint from other data (a different number of steps per epoch).
  r = stepc(fmt::format("train {} --epochs 3 --batch 48 --resume {}", common, first));
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("is at step 16, not at the end of an epoch of 5 steps"),
            std::string::npos)
      << r.output;
}

TEST_F(TrainCli, ImportedOnnxModel) {
  std::string onnx = "/usr/share/libonnx-testdata/data/pytorch-converted/test_Linear/model.onnx";
  if (!fs::exists(onnx))
    GTEST_SKIP() << "no ONNX test data";
  // import-onnx writes the weights beside the graph; run, train and compile find them.
  std::string sg = (work / "linear.sg").string();
  CommandResult r = stepc(fmt::format("import-onnx {} -o {}", onnx, sg));
  ASSERT_EQ(r.status, 0) << r.output;
  ASSERT_TRUE(fs::exists(work / "linear.safetensors")) << r.output;
  std::string beside =
      fmt::format("params from {} (found beside {})", (work / "linear.safetensors").string(), sg);
  CommandResult imported = stepc(fmt::format("run {} --seed 1", sg));
  ASSERT_EQ(imported.status, 0) << imported.output;
  EXPECT_NE(imported.output.find(beside), std::string::npos) << imported.output;
  CommandResult fromOnnx = stepc(fmt::format("run {} --seed 1", onnx));
  ASSERT_EQ(fromOnnx.status, 0) << fromOnnx.output;
  auto lastLine = [](const std::string &text) {
    size_t start = text.rfind('\n', text.size() - 2);
    return text.substr(start + 1);
  };
  EXPECT_EQ(lastLine(imported.output), lastLine(fromOnnx.output));

  // --params also takes a folder of NAME.npy.
  fs::create_directories(work / "npy");
  for (const auto &[name, value] : readSafetensors((work / "linear.safetensors").string()))
    writeNpy((work / "npy" / (name + ".npy")).string(), value);
  CommandResult fromFolder =
      stepc(fmt::format("run {} --seed 1 --params {}", sg, (work / "npy").string()));
  ASSERT_EQ(fromFolder.status, 0) << fromFolder.output;
  EXPECT_EQ(lastLine(fromFolder.output), lastLine(fromOnnx.output));

  // The weight is stored transposed as NAME.T: its values in ONNX's layout
  // (what a PyTorch state dict holds) fail to load, naming it, rather than
  // loading transposed where the weight is square.
  std::map<std::string, Tensor> onnxLayout;
  std::string renamed;
  for (const auto &[name, value] : readSafetensors((work / "linear.safetensors").string())) {
    bool transposed = name.ends_with(".T");
    if (transposed)
      renamed = name;
    onnxLayout.emplace(transposed ? name.substr(0, name.size() - 2) : name,
                       transposed ? Tensor(value.dtype(), {value.shape()[1], value.shape()[0]})
                                  : value);
  }
  ASSERT_FALSE(renamed.empty());
  writeSafetensors((work / "onnx_layout.safetensors").string(), onnxLayout);
  r = stepc(fmt::format("run {} --seed 1 --params {}", sg,
                        (work / "onnx_layout.safetensors").string()));
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find(fmt::format("missing param '{}'", renamed)), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("ONNX's layout"), std::string::npos) << r.output;

  // compile's NAME.params.safetensors (what NAME_create loads) holds them too.
  r = stepc(fmt::format("compile {} -o {} --name linear", sg, (work / "aot").string()));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find(beside), std::string::npos) << r.output;
  std::map<std::string, Tensor> weights = readSafetensors((work / "linear.safetensors").string());
  std::map<std::string, Tensor> compiled =
      readSafetensors((work / "aot" / "linear.params.safetensors").string());
  for (const auto &[name, value] : weights) {
    ASSERT_TRUE(compiled.count(name)) << name;
    EXPECT_TRUE(compiled.at(name) == value) << name;
  }

  // 10 features, 8 outputs: trained as a classifier with a loss added on
  // the command line, labels from a file.
  Tensor x = testing::randomTensor(DType::F32, {64, 10}, 11);
  Tensor labels(DType::I32, {64});
  for (int64_t i = 0; i < 64; ++i) {
    int64_t best = 0;
    for (int64_t j = 1; j < 8; ++j)
      if (x.real(i * 10 + j) > x.real(i * 10 + best))
        best = j;
    labels.setReal(i, double(best));
  }
  writeNpy((work / "x.npy").string(), x);
  writeNpy((work / "labels.npy").string(), labels);
  r = stepc(fmt::format("train {} --loss cross_entropy:v_3:labels --data v_0={} --data "
                        "labels={} --epochs 5 --lr 0.05 --checkpoint {}",
                        sg, (work / "x.npy").string(), (work / "labels.npy").string(),
                        (work / "trained.safetensors").string()));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find(beside), std::string::npos) << r.output;
  std::vector<double> losses = epochLosses(r.output);
  ASSERT_EQ(losses.size(), 5u) << r.output;
  EXPECT_LT(losses[4], losses[0]) << r.output;
  EXPECT_NE(r.output.find("accuracy"), std::string::npos) << r.output;
}

TEST_F(TrainCli, BadInputsAreClearErrors) {
  std::string sg = data("blobs.sg"), x = data("x.npy"), y = data("y.npy");
  std::string evalY = data("eval_y.npy");
  struct Case {
    std::string arguments, expected;
  };
  std::vector<Case> cases = {
      {fmt::format("{} --loss loss --data x={} --data y={}", sg, x, evalY),
       fmt::format("--data: the arrays disagree on their rows (axis 0): x={} has 256, y={} has 64",
                   x, evalY)},
      {fmt::format("{} --loss loss --data x={}", sg, x),
       "--data: no data for input y (i32[16]) of graph 'blobs'"},
      {fmt::format("{} --loss loss --data x={} --data y={} --data z={}", sg, x, y, y),
       "graph 'blobs' has no input 'z' (inputs: x, y)"},
      {fmt::format("{} --loss loss --data x={} --data y={}", sg, y, y),
       "input 'x' is f32[16,4], so the file should hold f32 rows of [4]; it holds i32[256]"},
      {fmt::format("{} --loss loss --data x={} --data y={}", sg, x, x),
       "input 'y' is i32[16], so the file should hold i32 scalars, one per row; it holds "
       "f32[256,4]"},
      {fmt::format("{} --loss loss --data x={} --data y={} --batch 300", sg, x, y),
       "--batch 300 is larger than the data: 256 rows"},
      {fmt::format("{} --loss nope --data x={} --data y={}", sg, x, y),
       "graph 'blobs' has no output 'nope' (outputs: loss)"},
      {fmt::format("{} --loss mse:logits:y --data x={} --data y={}", sg, x, y),
       "--loss mse:logits:y: error: sub: operand dtypes differ"},
      {fmt::format("{} --loss loss --data x={} --data y={} --resume {}", sg, x, y, y),
       "not a safetensors file"},
      {fmt::format("{} --loss loss --data x {}", sg, x), "expected NAME=FILE.npy"},
      {fmt::format("{} --loss loss --data x={} --data y={} --data x={}", sg, x, y, x),
       "input 'x' is given twice"},
  };
  for (const Case &c : cases) {
    CommandResult r = stepc("train " + c.arguments);
    EXPECT_EQ(r.status, 1) << c.arguments << "\n" << r.output;
    EXPECT_NE(r.output.find(c.expected), std::string::npos) << c.arguments << "\n" << r.output;
  }
}

} // namespace
} // namespace stepc
