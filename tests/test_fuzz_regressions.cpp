// The libFuzzer seed corpora (tests/fuzz/corpus/<target>/) in the normal
// suite: every file must be accepted or rejected with stepc::Error by the
// reader its fuzzer drives, never crash or throw anything else. Inputs a
// fuzzer found crashing are committed there as crash-*; each also has a test
// below for the error it must now give.
#include "testing.h"

#include "stepc/error.h"
#include "stepc/executable.h"
#include "stepc/npy.h"
#include "stepc/onnx.h"
#include "stepc/text.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>

namespace stepc {
namespace {

namespace fs = std::filesystem;

std::string corpusDir(const std::string &target) {
  return testing::sourcePath("tests/fuzz/corpus/" + target);
}

std::string readBytes(const fs::path &path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream bytes;
  bytes << in.rdbuf();
  return bytes.str();
}

// Runs `read` on every file of the corpus; returns how many were rejected.
int replay(const std::string &target, const std::function<void(const fs::path &)> &read) {
  int files = 0, rejected = 0;
  for (const auto &entry : fs::directory_iterator(corpusDir(target))) {
    ++files;
    bool crashInput = entry.path().filename().string().starts_with("crash-");
    try {
      read(entry.path());
      EXPECT_FALSE(crashInput) << entry.path() << " was found crashing; it must be rejected";
    } catch (const Error &) {
      ++rejected;
    } catch (const std::exception &e) {
      ADD_FAILURE() << entry.path() << ": not a stepc::Error: " << e.what();
    }
  }
  EXPECT_GT(files, 0) << "no corpus in " << corpusDir(target);
  return rejected;
}

TEST(FuzzCorpus, SgFilesParseOrAreRejected) {
  replay("sg", [](const fs::path &p) { printGraph(parseGraph(readBytes(p), p.string())); });
}

TEST(FuzzCorpus, NpyFilesReadOrAreRejected) {
  EXPECT_EQ(replay("npy", [](const fs::path &p) { readNpy(p.string()); }), 0)
      << "the npy seeds are all valid files";
}

TEST(FuzzCorpus, SafetensorsFilesReadOrAreRejected) {
  EXPECT_EQ(replay("safetensors", [](const fs::path &p) { readSafetensors(p.string()); }), 0)
      << "the safetensors seeds are all valid files";
}

TEST(FuzzCorpus, OnnxFilesImportOrAreRejected) {
  replay("onnx", [](const fs::path &p) {
    if (p.extension() == ".pb")
      parseOnnxTensor(readBytes(p), p.string());
    else
      importOnnx(p.string());
  });
}

// fuzz_onnx: a pool with a kernel_shape entry of 0 built no window and then
// called a method on an empty Value (UBSan: member call on null pointer).
TEST(FuzzRegression, OnnxPoolWithAZeroKernelIsRejected) {
  try {
    importOnnx(corpusDir("onnx") + "/crash-pool-kernel-zero.onnx");
    FAIL() << "imported a pool with an empty window";
  } catch (const Error &e) {
    EXPECT_NE(std::string(e.what()).find("kernel_shape entries must be >= 1"), std::string::npos)
        << e.what();
  }
}

} // namespace
} // namespace stepc
