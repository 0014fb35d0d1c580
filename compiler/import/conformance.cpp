// The ONNX backend test suite as a conformance check: every directory with a
// model.onnx and test_data_set_*/{input,output}_N.pb is one test.
//
// A test is skipped only when stepc cannot express the model (an operator,
// element type or variant it lacks, or sequence/optional values); a model
// that imports and gives wrong numbers, or fails in any other way, is a
// failure. Graph inputs the model needs at import (a Reshape's target shape
// fed as an input, as many node tests do) are bound to the test's values:
// stepc specializes shapes at compile time, so that is how such a model runs.
#include "stepc/file.h"
#include "stepc/onnx.h"
#include "stepc/npy.h"

#include <fmt/format.h>

#include <onnx/onnx_pb.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

namespace stepc {
namespace {

namespace fs = std::filesystem;

enum class Status { Passed, Failed, Skipped };

struct Outcome {
  Status status = Status::Passed;
  bool bound = false;             // some inputs were bound at import
  std::string reason;             // Failed
  std::set<std::string> skipKeys; // Skipped: "operators|Resize", "types|float16", ...
};

Outcome failed(std::string reason) { return {Status::Failed, false, std::move(reason), {}}; }
Outcome skipped(std::string key) { return {Status::Skipped, false, "", {std::move(key)}}; }

std::string readBytes(const fs::path &path) {
  return readFileBounded(path.string(), kMaxOnnxFileBytes, "an ONNX file",
                         "protobuf parses messages of at most 2 GiB");
}

// The first line of a (possibly multi-line) message.
std::string firstLine(const std::string &s) {
  std::string line = s.substr(0, s.find('\n'));
  return line.size() > 400 ? line.substr(0, 400) + "..." : line;
}

Outcome unsupportedOutcome(const OnnxImportError &e) {
  Outcome outcome{Status::Skipped, false, "", {}};
  for (const OnnxProblem &p : e.problems()) {
    switch (p.kind) {
    case OnnxProblem::Kind::Operator: outcome.skipKeys.insert("operators|" + p.opType); break;
    case OnnxProblem::Kind::DType:
      outcome.skipKeys.insert("types|" + (p.typeName.empty() ? "other" : p.typeName));
      break;
    case OnnxProblem::Kind::Feature:
      outcome.skipKeys.insert("variants|" + (p.opType.empty() ? "" : p.opType + ": ") +
                              firstLine(p.reason));
      break;
    case OnnxProblem::Kind::StaticInput:
    case OnnxProblem::Kind::Invalid: break;
    }
  }
  // Unsupported parts explain any other problem; without them, it is a failure.
  if (outcome.skipKeys.empty()) {
    std::string reasons;
    for (const OnnxProblem &p : e.problems())
      reasons += fmt::format("{}{}{}", reasons.empty() ? "import: " : "; ",
                             p.opType.empty() ? "" : p.opType + ": ", p.reason);
    return failed(reasons.empty() ? std::string(e.what()) : reasons);
  }
  return outcome;
  return outcome;
}

bool close(double got, double want, double rtol, double atol) {
  if (std::isnan(got) || std::isnan(want))
    return std::isnan(got) && std::isnan(want);
  if (std::isinf(got) || std::isinf(want))
    return got == want;
  return std::abs(got - want) <= atol + rtol * std::abs(want);
}

// "" when equal, else what differs.
std::string compare(const Tensor &got, const Tensor &want, double rtol, double atol) {
  if (got.dtype() != want.dtype() || got.shape() != want.shape())
    return fmt::format("got {}, expected {}", typeString(got.type()), typeString(want.type()));
  int64_t bad = 0, first = -1;
  double worst = 0;
  bool real = isFloat(got.dtype());
  for (int64_t i = 0; i < got.numel(); ++i) {
    double g = got.real(i), w = want.real(i);
    // Integers compare exactly (a u64 above 2^53 is not exact as a double).
    bool ok = real ? close(g, w, rtol, atol) : got.integer(i) == want.integer(i);
    if (!ok) {
      if (bad++ == 0)
        first = i;
      if (std::isfinite(g) && std::isfinite(w))
        worst = std::max(worst, std::abs(g - w));
    }
  }
  if (bad == 0)
    return "";
  return fmt::format("{} of {} elements differ; first at flat index {}: got {}, expected {} "
                     "(max abs diff {:.3g})",
                     bad, got.numel(), first, got.real(first), want.real(first), worst);
}

std::vector<fs::path> numbered(const fs::path &dir, const std::string &prefix) {
  std::vector<fs::path> files;
  for (int i = 0;; ++i) {
    fs::path p = dir / fmt::format("{}_{}.pb", prefix, i);
    if (!fs::exists(p))
      break;
    files.push_back(p);
  }
  return files;
}

bool isTensorType(const onnx::TypeProto &type) { return type.has_tensor_type(); }

Outcome runTest(const fs::path &dir, const ConformanceOptions &options) {
  std::string bytes = readBytes(dir / "model.onnx");
  onnx::ModelProto model;
  if (!model.ParseFromString(bytes))
    return failed("model.onnx is not a valid ONNX model");
  std::set<std::string> initializers;
  for (const auto &init : model.graph().initializer())
    initializers.insert(init.name());
  std::vector<std::string> inputNames;
  // Which inputs and outputs are declared bfloat16 (for bitsAs below).
  std::vector<DType> inputTypes, outputTypes;
  auto declared = [](const onnx::ValueInfoProto &v) {
    return v.type().tensor_type().elem_type() == onnx::TensorProto::BFLOAT16 ? DType::BF16
                                                                            : DType::F32;
  };
  for (const auto &input : model.graph().input()) {
    if (initializers.count(input.name()))
      continue;
    if (!isTensorType(input.type()))
      return skipped("inputs|sequence, map or optional values");
    inputNames.push_back(input.name());
    inputTypes.push_back(declared(input));
  }
  for (const auto &output : model.graph().output()) {
    if (!isTensorType(output.type()))
      return skipped("inputs|sequence, map or optional values");
    outputTypes.push_back(declared(output));
  }

  std::vector<fs::path> sets;
  for (const auto &entry : fs::directory_iterator(dir))
    if (entry.is_directory() && entry.path().filename().string().starts_with("test_data_set_"))
      sets.push_back(entry.path());
  std::sort(sets.begin(), sets.end());
  if (sets.empty())
    return failed("no test_data_set_* directory");

  bool bound = false;
  for (const fs::path &set : sets) {
    std::string setName = set.filename().string();
    std::vector<fs::path> inputFiles = numbered(set, "input");
    std::vector<fs::path> outputFiles = numbered(set, "output");
    if (inputFiles.size() != inputNames.size())
      return failed(fmt::format("{}: {} input files for {} graph inputs", setName,
                                inputFiles.size(), inputNames.size()));
    OnnxImportOptions importOptions;
    std::vector<Tensor> expected;
    try {
      // The test data of bfloat16 values holds their bits as uint16.
      for (size_t i = 0; i < inputFiles.size(); ++i)
        importOptions.inputValues[inputNames[i]] =
            bitsAs(readOnnxTensor(inputFiles[i].string()), inputTypes[i]);
      for (size_t i = 0; i < outputFiles.size(); ++i)
        expected.push_back(bitsAs(readOnnxTensor(outputFiles[i].string()),
                                  i < outputTypes.size() ? outputTypes[i] : DType::F32));
    } catch (const OnnxImportError &e) {
      return unsupportedOutcome(e);
    }

    OnnxModel imported;
    try {
      imported = importOnnxBytes(bytes, (dir / "model.onnx").string(), importOptions);
    } catch (const OnnxImportError &e) {
      return unsupportedOutcome(e);
    }
    if (imported.graph.outputs.size() != expected.size())
      return failed(fmt::format("{}: the graph has {} outputs, the test {}", setName,
                                imported.graph.outputs.size(), expected.size()));
    TensorMap feeds;
    for (size_t i = 0; i < imported.inputs.size(); ++i) {
      if (!imported.inputs[i].empty())
        feeds[imported.inputs[i]] = importOptions.inputValues.at(inputNames[i]);
      else
        bound = true;
    }
    TensorMap outputs;
    try {
      outputs = options.run(imported.graph, feeds, imported.params);
    } catch (const Error &e) {
      return failed(fmt::format("{}: run failed: {}", setName, firstLine(e.what())));
    }
    for (size_t i = 0; i < expected.size(); ++i) {
      const std::string &name = imported.graph.outputs[i].name;
      auto it = outputs.find(name);
      if (it == outputs.end())
        return failed(fmt::format("{}: the backend returned no output '{}'", setName, name));
      std::string diff = compare(it->second, expected[i], options.rtol, options.atol);
      if (!diff.empty())
        return failed(
            fmt::format("{}: output {} ('{}'): {}", setName, i, imported.onnxOutputs[i], diff));
    }
  }
  Outcome passed;
  passed.bound = bound;
  return passed;
}

void printSummary(std::FILE *out, const std::map<std::string, int> &counts) {
  // Grouped by kind, most frequent first.
  std::map<std::string, std::vector<std::pair<int, std::string>>> groups;
  for (const auto &[key, n] : counts) {
    size_t bar = key.find('|');
    groups[key.substr(0, bar)].emplace_back(n, key.substr(bar + 1));
  }
  const std::pair<const char *, const char *> order[] = {
      {"operators", "skipped operators"},
      {"types", "skipped element types"},
      {"variants", "skipped variants of supported operators"},
      {"inputs", "skipped inputs"}};
  for (const auto &[kind, title] : order) {
    auto it = groups.find(kind);
    if (it == groups.end())
      continue;
    auto &list = it->second;
    std::sort(list.begin(), list.end(), [](const auto &a, const auto &b) {
      return a.first != b.first ? a.first > b.first : a.second < b.second;
    });
    bool multiline = std::string_view(kind) == "variants";
    fmt::print(out, "{}:{}", title, multiline ? "\n" : " ");
    for (size_t i = 0; i < list.size(); ++i) {
      std::string item = fmt::format("{} ({}{})", list[i].second, list[i].first,
                                     i == 0 ? (list[i].first == 1 ? " test" : " tests") : "");
      if (multiline)
        fmt::print(out, "  {}\n", item);
      else
        fmt::print(out, "{}{}", i ? ", " : "", item);
    }
    if (!multiline)
      fmt::print(out, "\n");
  }
}

} // namespace

std::map<std::string, std::string, std::less<>> readExpectedFailures(const std::string &path) {
  std::ifstream file(path);
  if (!file)
    throw Error(fmt::format("{}: cannot open the expected-failures file", path));
  std::map<std::string, std::string, std::less<>> list;
  std::string line;
  while (std::getline(file, line)) {
    size_t start = line.find_first_not_of(" \t");
    if (start == std::string::npos || line[start] == '#')
      continue;
    size_t end = line.find_first_of(" \t", start);
    std::string name = line.substr(start, end - start);
    std::string reason;
    if (end != std::string::npos) {
      size_t r = line.find_first_not_of(" \t", end);
      if (r != std::string::npos)
        reason = line.substr(r);
    }
    list[name] = reason;
  }
  return list;
}

ConformanceResult runOnnxConformance(const std::string &dir, const ConformanceOptions &options,
                                     std::FILE *out) {
  if (!fs::is_directory(dir))
    throw Error(fmt::format("{}: not a directory", dir));
  std::vector<fs::path> tests;
  for (auto it = fs::recursive_directory_iterator(dir); it != fs::recursive_directory_iterator();
       ++it)
    if (it->is_regular_file() && it->path().filename() == "model.onnx")
      tests.push_back(it->path().parent_path());
  std::sort(tests.begin(), tests.end());
  // An empty run would report "0 failed" and pass: a wrong path is a mistake.
  if (tests.empty())
    throw Error(fmt::format("no ONNX test cases found under {} (a test case is a directory "
                            "holding model.onnx)",
                            dir));

  ConformanceResult result;
  std::map<std::string, int> skipCounts;
  for (const fs::path &test : tests) {
    std::string name = fs::relative(test, dir).generic_string();
    if (name == ".")
      name = test.filename().string();
    Outcome outcome;
    try {
      outcome = runTest(test, options);
    } catch (const std::exception &e) {
      outcome = failed(fmt::format("error: {}", firstLine(e.what())));
    }
    auto xfail = options.expectedFailures.find(name);
    if (xfail == options.expectedFailures.end())
      xfail = options.expectedFailures.find(test.filename().string());
    bool expectedToFail = xfail != options.expectedFailures.end();
    switch (outcome.status) {
    case Status::Passed:
      ++result.passed;
      result.bound += outcome.bound;
      if (expectedToFail) {
        ++result.xpassed;
        fmt::print(out, "XPASS {}: listed as an expected failure but passes\n", name);
      } else if (options.verbose) {
        fmt::print(out, "PASS {}\n", name);
      }
      break;
    case Status::Failed:
      if (expectedToFail) {
        ++result.xfailed;
        if (options.verbose)
          fmt::print(out, "XFAIL {}: {} ({})\n", name, firstLine(outcome.reason), xfail->second);
      } else {
        ++result.failed;
        fmt::print(out, "FAIL {}: {}\n", name, firstLine(outcome.reason));
      }
      break;
    case Status::Skipped:
      ++result.skipped;
      for (const std::string &key : outcome.skipKeys)
        ++skipCounts[key];
      if (options.verbose) {
        std::string keys;
        for (const std::string &key : outcome.skipKeys)
          keys += (keys.empty() ? "" : "; ") + key.substr(key.find('|') + 1);
        fmt::print(out, "SKIP {}: {}\n", name, keys);
      }
      break;
    }
    std::fflush(out);
  }
  printSummary(out, skipCounts);
  if (result.bound)
    fmt::print(out,
               "{} of the passed tests feed a shape-setting operand (a Reshape target, Slice "
               "starts, ...) as a graph input; stepc shapes are static, so those inputs were "
               "bound to the test's values at import\n",
               result.bound);
  if (result.xfailed || result.xpassed)
    fmt::print(out, "expected failures: {} failed as expected, {} passed unexpectedly\n",
               result.xfailed, result.xpassed);
  fmt::print(out, "{} passed, {} failed, {} skipped\n", result.passed, result.failed,
             result.skipped);
  return result;
}

} // namespace stepc
