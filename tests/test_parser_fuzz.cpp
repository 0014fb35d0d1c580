// Mutation fuzzing of the .sg parser, in process: every input must either
// parse (and then round-trip) or throw stepc::Error. A crash or any other
// exception fails the test; the seed is printed for replay
// (STEPC_TEST_SEED=<seed>). By default a fixed number of mutations from a
// fixed seed, the same inputs every run; the `random` label runs it for a
// bounded time with a fresh seed (STEPC_FUZZ_MS, STEPC_FRESH_SEEDS). The
// coverage-guided fuzzer for the parser is tests/fuzz/fuzz_sg.cpp.
#include "nan_attrs.h"
#include "sg_corpus.h"
#include "testing.h"

#include "stepc/text.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <sstream>

namespace stepc {
namespace {

constexpr int kMutations = 20000;

// STEPC_FUZZ_MS=<ms>: mutate for that long instead of kMutations times.
std::optional<std::chrono::milliseconds> budget() {
  if (const char *ms = std::getenv("STEPC_FUZZ_MS"))
    return std::chrono::milliseconds(std::strtoll(ms, nullptr, 10));
  return std::nullopt;
}

std::vector<std::string> corpus() {
  std::vector<std::string> texts = {
      testing::corpusText("every_op"), testing::corpusText("composites"),
      testing::corpusText("canonical"), testing::corpusText("step")};
  std::filesystem::path dir = STEPC_SOURCE_DIR "/examples";
  if (std::filesystem::exists(dir))
    for (const auto &entry : std::filesystem::directory_iterator(dir))
      if (entry.path().extension() == ".sg") {
        std::ifstream in(entry.path(), std::ios::binary);
        std::stringstream text;
        text << in.rdbuf();
        texts.push_back(text.str());
      }
  return texts;
}

// Tokens that tend to reach deeper parser states than random bytes do.
constexpr std::string_view kFragments[] = {"{",
                                           "}",
                                           "(",
                                           ")",
                                           "[",
                                           "]",
                                           ",",
                                           "=",
                                           ":",
                                           "%",
                                           "%x",
                                           "%1",
                                           "%0",
                                           "-",
                                           "-inf",
                                           "inf",
                                           "nan",
                                           "1e999",
                                           "1e-400",
                                           "99999999999999",
                                           "9223372036854775808",
                                           "-1",
                                           "0",
                                           "1.5",
                                           "\"",
                                           "\"s\\x41\"",
                                           "\"\\",
                                           "#",
                                           "//",
                                           "\n",
                                           std::string_view("\0", 1),
                                           "f32",
                                           "i64[]",
                                           "bool[2]",
                                           "[]",
                                           "graph",
                                           "input",
                                           "param",
                                           "output",
                                           "softmax",
                                           "constant()",
                                           "iota()",
                                           "{axis=0}",
                                           "{dtype=f32, shape=[2], value=1}",
                                           "f32[1099511627776,1099511627776]",
                                           "f32[1048576,1048576,4]",
                                           "zeros()",
                                           "he_uniform(seed=1)",
                                           "attention",
                                           "cross_entropy",
                                           "concat",
                                           "\xff",
                                           "\x01",
                                           "update",
                                           "update %w = %w",
                                           "9223372036854775807",
                                           "-9223372036854775808",
                                           "4611686018427387904",
                                           "1099511627776"};

class Mutator {
public:
  Mutator(uint64_t seed, std::vector<std::string> corpus)
      : rng_(seed), corpus_(std::move(corpus)) {}

  std::string next() {
    if (below(20) == 0)
      return randomBytes(below(300));
    std::string text = pick();
    int rounds = 1 + static_cast<int>(below(4));
    for (int i = 0; i < rounds; ++i)
      mutate(text);
    return text;
  }

private:
  size_t below(size_t n) {
    return n == 0 ? 0 : std::uniform_int_distribution<size_t>(0, n - 1)(rng_);
  }
  const std::string &pick() { return corpus_[below(corpus_.size())]; }
  size_t position(const std::string &text) { return below(text.size() + 1); }

  std::string randomBytes(size_t n) {
    std::string s(n, '\0');
    for (char &c : s)
      c = static_cast<char>(below(256));
    return s;
  }

  void mutate(std::string &text) {
    switch (below(9)) {
    case 0: // flip a bit
      if (!text.empty())
        text[below(text.size())] ^= static_cast<char>(1 << below(8));
      break;
    case 1: // overwrite a byte
      if (!text.empty())
        text[below(text.size())] = static_cast<char>(below(256));
      break;
    case 2: // insert random bytes
      text.insert(position(text), randomBytes(1 + below(8)));
      break;
    case 3: { // insert a fragment
      text.insert(position(text), kFragments[below(std::size(kFragments))]);
      break;
    }
    case 4: { // delete a range
      size_t at = position(text);
      text.erase(at, below(std::min<size_t>(text.size() - at, 32) + 1));
      break;
    }
    case 5: // truncate
      text.resize(position(text));
      break;
    case 6: { // duplicate a range, possibly many times
      size_t at = position(text);
      std::string piece = text.substr(at, below(24) + 1);
      size_t times = below(4) == 0 ? below(2000) : 1 + below(3);
      std::string repeated;
      for (size_t i = 0; i < times; ++i)
        repeated += piece;
      text.insert(position(text), repeated);
      break;
    }
    case 7: { // splice the start of this text onto the end of another
      const std::string &other = pick();
      text = text.substr(0, position(text)) + other.substr(below(other.size() + 1));
      break;
    }
    case 8: { // swap two digits for other digits (shapes, axes, seeds)
      for (int i = 0; i < 4 && !text.empty(); ++i) {
        size_t at = below(text.size());
        if (text[at] >= '0' && text[at] <= '9')
          text[at] = static_cast<char>('0' + below(10));
      }
      break;
    }
    }
  }

  std::mt19937_64 rng_;
  std::vector<std::string> corpus_;
};

std::string printable(const std::string &text) {
  std::string out;
  for (char c : text.substr(0, 2000)) {
    unsigned char u = static_cast<unsigned char>(c);
    if (c == '\n' || (u >= 0x20 && u < 0x7f))
      out += c;
    else
      out +=
          "\\x" + std::string(1, "0123456789abcdef"[u >> 4]) + "0123456789abcdef"[u & 15];
  }
  return text.size() > 2000 ? out + "..." : out;
}

// Returns false (after recording a failure) when the parser misbehaved.
bool checkOne(const std::string &text, int &parsed) {
  Graph graph;
  try {
    graph = parseGraph(text, "fuzz.sg");
  } catch (const Error &) {
    return true;
  } catch (const std::exception &e) {
    ADD_FAILURE() << "non-stepc exception: " << e.what() << "\ninput:\n"
                  << printable(text);
    return false;
  } catch (...) {
    ADD_FAILURE() << "unknown exception\ninput:\n" << printable(text);
    return false;
  }
  ++parsed;
  std::string printed = printGraph(graph);
  try {
    Graph again = parseGraph(printed, "printed.sg");
    if (!testing::hasNaNAttr(graph) && !(again == graph)) {
      ADD_FAILURE() << "round trip changed the graph\ninput:\n" << printable(text);
      return false;
    }
    if (printGraph(again) != printed) {
      ADD_FAILURE() << "printing is not stable\ninput:\n" << printable(text);
      return false;
    }
  } catch (const std::exception &e) {
    ADD_FAILURE() << "printed graph does not parse: " << e.what() << "\ninput:\n"
                  << printable(text) << "\nprinted:\n"
                  << printable(printed);
    return false;
  }
  return true;
}

TEST(ParserFuzz, MutatedInputsParseOrThrowStepcError) {
  uint64_t seed = testing::freshSeed();
  SCOPED_TRACE("STEPC_TEST_SEED=" + std::to_string(seed));
  RecordProperty("seed", std::to_string(seed));
  Mutator mutator(seed, corpus());
  std::optional<std::chrono::milliseconds> time = budget();
  auto deadline = std::chrono::steady_clock::now() + time.value_or(std::chrono::milliseconds(0));
  int runs = 0, parsed = 0;
  while (time ? std::chrono::steady_clock::now() < deadline : runs < kMutations) {
    ++runs;
    if (!checkOne(mutator.next(), parsed))
      break; // one reproducer is enough
  }
  RecordProperty("runs", runs);
  RecordProperty("parsed", parsed);
  // The corpus itself must parse, or the mutations test little.
  for (const std::string &text : corpus()) {
    int ok = 0;
    checkOne(text, ok);
    EXPECT_EQ(ok, 1) << text;
  }
}

} // namespace
} // namespace stepc
