// `stepc demo gpt`: a character-level GPT (examples/gpt.sg) trained on the
// text of Debian's fortunes package with AdamW, a linear warm-up and cosine
// decay; reports the held-out loss per epoch beside the unigram baseline
// (what knowing only the characters' frequencies is worth), then samples
// new fortunes.
#include "commands.h"
#include "datasets.h"
#include "training.h"

#include "stepc/compile.h"
#include "stepc/text.h"
#include "stepc/train.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numbers>
#include <random>

namespace stepc::cli {
namespace {

// '\n' = 0, ' '..'~' = 1..95: printable ASCII and line breaks. Tabs read as
// spaces; anything else (backspace overstriking, the odd Latin-1 byte) is
// dropped.
constexpr int64_t kVocab = 96;

int32_t symbolOf(char c) {
  if (c == '\n')
    return 0;
  if (c == '\t')
    c = ' ';
  return c >= ' ' && c <= '~' ? c - ' ' + 1 : -1;
}
char charOf(int32_t symbol) { return symbol == 0 ? '\n' : static_cast<char>(' ' + symbol - 1); }

// Fortunes as one stream of symbols, each fortune followed by "%\n" (the
// fortune files' own separator), so the model learns where one ends.
std::vector<int32_t> encode(const std::vector<std::string> &fortunes) {
  std::vector<int32_t> stream;
  for (const std::string &fortune : fortunes)
    for (char c : fortune + "%\n")
      if (int32_t s = symbolOf(c); s >= 0)
        stream.push_back(s);
  return stream;
}

// What the driver needs of a model: inputs `tokens` i32[B,T] and `targets`
// i32[B*T] (the next characters), a value named `logits` f32[B*T,96] and the
// output `loss` (tools/bench/make_gpt.py --vocab 96 writes such graphs).
struct CharModel {
  Graph graph;
  int64_t batch = 0, tokens = 0;
};

CharModel loadCharModel(const std::string &path) {
  CharModel m;
  m.graph = parseGraphFile(path);
  const Graph &g = m.graph;
  auto tokens = g.findNamed("tokens"), targets = g.findNamed("targets"),
       logits = g.findNamed("logits");
  auto expected = [&](const std::string &what) {
    return Error(fmt::format("{}: the gpt demo needs {}", path, what));
  };
  if (!tokens || g.node(*tokens).op != OpKind::Input || g.type(*tokens).dtype != DType::I32 ||
      g.type(*tokens).rank() != 2)
    throw expected("an input 'tokens' of type i32[B,T]");
  m.batch = g.type(*tokens).shape[0];
  m.tokens = g.type(*tokens).shape[1];
  int64_t rows = m.batch * m.tokens;
  if (!targets || g.node(*targets).op != OpKind::Input ||
      g.type(*targets) != TensorType{DType::I32, {rows}})
    throw expected(fmt::format("an input 'targets' of type i32[{}]", rows));
  if (!logits || g.type(*logits) != TensorType{DType::F32, {rows, kVocab}})
    throw expected(fmt::format("a value named 'logits' of type f32[{},{}] (a vocabulary of {}: "
                               "line breaks and printable ASCII)",
                               rows, kVocab, kVocab));
  if (!g.findOutput("loss"))
    throw expected("an output named 'loss'");
  return m;
}

// The windows of `stream` starting at `starts[first ..]`: tokens and the
// characters that follow each of them.
TensorMap makeBatch(const CharModel &m, const std::vector<int32_t> &stream,
                    const std::vector<int64_t> &starts, int64_t first) {
  Tensor tokens(DType::I32, {m.batch, m.tokens}), targets(DType::I32, {m.batch * m.tokens});
  for (int64_t b = 0; b < m.batch; ++b) {
    auto from = stream.begin() + starts[static_cast<size_t>(first + b)];
    std::copy_n(from, m.tokens, tokens.data<int32_t>() + b * m.tokens);
    std::copy_n(from + 1, m.tokens, targets.data<int32_t>() + b * m.tokens);
  }
  TensorMap inputs;
  inputs.emplace("tokens", std::move(tokens));
  inputs.emplace("targets", std::move(targets));
  return inputs;
}

// Window starts one window apart from `offset`, for an epoch of training
// (shuffled) or for evaluation (in order, at most `limit` of them).
std::vector<int64_t> windowStarts(const CharModel &m, const std::vector<int32_t> &stream,
                                  int64_t offset, int64_t limit) {
  std::vector<int64_t> starts;
  for (int64_t s = offset; s + m.tokens + 1 <= static_cast<int64_t>(stream.size()) &&
                           static_cast<int64_t>(starts.size()) < limit;
       s += m.tokens)
    starts.push_back(s);
  return starts;
}

// The cross-entropy of predicting each held-out character by its frequency
// in the training text (add-one smoothed): what a model must beat to have
// learned anything about order.
double unigramLoss(const std::vector<int32_t> &train, const std::vector<int32_t> &heldOut) {
  std::vector<double> counts(kVocab, 1.0);
  for (int32_t s : train)
    counts[static_cast<size_t>(s)] += 1;
  double total = static_cast<double>(train.size()) + kVocab, sum = 0;
  for (int32_t s : heldOut)
    sum -= std::log(counts[static_cast<size_t>(s)] / total);
  return sum / static_cast<double>(std::max<size_t>(heldOut.size(), 1));
}

// Mean loss over the windows `starts` (whole batches of them).
double meanLoss(Executable &evaluator, const CharModel &m, const std::vector<int32_t> &stream,
                const std::vector<int64_t> &starts) {
  int64_t batches = static_cast<int64_t>(starts.size()) / m.batch;
  double sum = 0;
  for (int64_t i = 0; i < batches; ++i)
    sum += evaluator.step(makeBatch(m, stream, starts, i * m.batch)).at("loss").real(0);
  return sum / static_cast<double>(std::max<int64_t>(batches, 1));
}

// Linear warm-up to `peak` over `warmup` steps, then cosine decay to a tenth
// of it at the last step (GPT-2's and nanoGPT's schedule).
double learningRate(int64_t step, int64_t warmup, int64_t total, double peak) {
  if (step < warmup)
    return peak * double(step + 1) / double(warmup);
  double progress = double(step - warmup) / double(std::max<int64_t>(total - warmup, 1));
  double minimum = peak / 10;
  return minimum + 0.5 * (peak - minimum) * (1 + std::cos(std::numbers::pi * progress));
}

// Samples `rows` fortunes at once, one character per forward pass: each row
// starts after a "%\n" (the start of a fortune), sees its last T characters
// and draws the next from softmax(logits / temperature) at its last
// position (the attention is causal, so what lies after it does not
// matter), until it ends its fortune or reaches `maxLength`.
std::vector<std::string> sampleFortunes(Executable &evaluator, const CharModel &m, int64_t rows,
                                        int maxLength, double temperature, std::mt19937 &rng) {
  rows = std::min(rows, m.batch);
  std::vector<std::vector<int32_t>> texts(static_cast<size_t>(rows),
                                          {symbolOf('%'), symbolOf('\n')});
  std::vector<bool> done(static_cast<size_t>(rows), false);
  for (int length = 0; length < maxLength; ++length) {
    Tensor tokens(DType::I32, {m.batch, m.tokens});
    std::vector<int64_t> last(static_cast<size_t>(rows));
    for (int64_t r = 0; r < rows; ++r) {
      const std::vector<int32_t> &text = texts[static_cast<size_t>(r)];
      int64_t n = std::min<int64_t>(static_cast<int64_t>(text.size()), m.tokens);
      std::copy(text.end() - n, text.end(), tokens.data<int32_t>() + r * m.tokens);
      last[static_cast<size_t>(r)] = n - 1;
    }
    TensorMap inputs;
    inputs.emplace("tokens", std::move(tokens));
    inputs.emplace("targets", Tensor(DType::I32, {m.batch * m.tokens}));
    Tensor logits = evaluator.step(inputs).at("logits");
    for (int64_t r = 0; r < rows; ++r) {
      if (done[static_cast<size_t>(r)])
        continue;
      const float *row =
          logits.data<float>() + (r * m.tokens + last[static_cast<size_t>(r)]) * kVocab;
      int32_t next = sampleSymbol(row, kVocab, temperature, rng);
      std::vector<int32_t> &text = texts[static_cast<size_t>(r)];
      text.push_back(next);
      // "\n%": the model ended the fortune.
      if (next == symbolOf('%') && text[text.size() - 2] == symbolOf('\n'))
        done[static_cast<size_t>(r)] = true;
    }
    if (std::all_of(done.begin(), done.end(), [](bool d) { return d; }))
      break;
  }
  std::vector<std::string> fortunes;
  for (const std::vector<int32_t> &text : texts) {
    std::string s;
    for (size_t i = 2; i < text.size(); ++i)
      s += charOf(text[i]);
    if (s.size() >= 2 && s.ends_with("\n%"))
      s.resize(s.size() - 2);
    fortunes.push_back(s);
  }
  return fortunes;
}

} // namespace

int gptDemo(const DemoOptions &options) {
  std::string modelName = options.model.empty() ? "gpt" : options.model;
  std::string modelPath = options.examples + "/" + modelName + ".sg";
  CharModel m = loadCharModel(modelPath);
  double peakLr = options.lr.value_or(2e-3);

  // Split by fortune, so no held-out fortune was seen in training.
  std::vector<std::string> fortunes = readFortunes(kFortunesDir);
  std::mt19937_64 rng(options.seed);
  size_t trainCount = shuffleForHeldOut(fortunes, rng);
  std::vector<int32_t> train = encode({fortunes.begin(), fortunes.begin() + trainCount});
  std::vector<int32_t> heldOut = encode({fortunes.begin() + trainCount, fortunes.end()});
  // A sample of the held-out text keeps the per-epoch evaluation short.
  std::vector<int64_t> heldOutStarts = windowStarts(m, heldOut, 0, 32 * m.batch);
  if (windowStarts(m, train, 0, m.batch).size() < size_t(m.batch) ||
      heldOutStarts.size() < size_t(m.batch))
    throw Error(fmt::format("{}: too little text for a batch of {} windows of {} characters",
                            kFortunesDir, m.batch, m.tokens));
  double unigram = unigramLoss(train, heldOut);
  fmt::print("{}: {} fortunes; {} characters to train on (90% of the fortunes), {} held out\n",
             kFortunesDir, fortunes.size(), train.size(), heldOut.size());

  // A pass over the training text takes far longer than a demo should at
  // today's speed, so an epoch here is a share of the run: `--epochs` of
  // them (kGptDemoEpochs unless given), kStepsPerEpoch steps each (or
  // --steps in all), the held-out loss after each. The windows are drawn
  // without replacement from every window of the training text (from a
  // random offset, in random order), so no text is seen twice.
  constexpr int64_t kStepsPerEpoch = 200;
  int64_t epochs = std::max(options.epochs, 1);
  int64_t steps = options.steps > 0 ? options.steps : epochs * kStepsPerEpoch;
  epochs = std::min(epochs, steps);
  int64_t warmup = std::min<int64_t>(100, std::max<int64_t>(steps / 10, 1));
  fmt::print("model {} ({} characters of context, batch {}), AdamW lr {:g} (warm-up {} steps, "
             "cosine to {:g}), {} steps in {} epochs\n",
             modelPath, m.tokens, m.batch, peakLr, warmup, peakLr / 10, steps, epochs);

  Optimizer opt = Optimizer::adamw(); // lr: an input, set every step
  auto compileStart = Clock::now();
  auto trainer = compileJit(trainStep(m.graph, "loss", opt));
  Graph eval = m.graph;
  eval.addOutput("logits", *m.graph.findNamed("logits"));
  auto evaluator = compileJit(eval);
  fmt::print("compiled the training step ({} kernels) and the model in {:.0f} ms\n",
             trainer->spec().kernels.size(), millisSince(compileStart));

  std::vector<int64_t> order;
  size_t next = 0;
  double average = 0, heldOutLoss = 0; // average: moving average of the batch losses
  auto trainStart = Clock::now();
  for (int64_t epoch = 1, s = 0; epoch <= epochs; ++epoch) {
    int64_t end = epoch * steps / epochs;
    Progress progress(fmt::format("epoch {}/{}", epoch, epochs), end - s);
    auto epochStart = Clock::now();
    for (int64_t first = s; s < end; ++s) {
      if (next + static_cast<size_t>(m.batch) > order.size()) {
        order = windowStarts(m, train, static_cast<int64_t>(rng() % uint64_t(m.tokens)),
                             INT64_MAX);
        std::shuffle(order.begin(), order.end(), rng);
        next = 0;
      }
      TensorMap batch = makeBatch(m, train, order, static_cast<int64_t>(next));
      batch.emplace("lr", Tensor::scalar(DType::F32, learningRate(s, warmup, steps, peakLr)));
      double loss = trainer->step(batch).at("loss").real(0);
      next += static_cast<size_t>(m.batch);
      average = s == 0 ? loss : 0.98 * average + 0.02 * loss;
      double seconds = millisSince(epochStart) / 1e3;
      progress.update(s - first + 1, fmt::format("loss {:.4f}  {:.1f} steps/s", average,
                                                 double(s - first + 1) / std::max(seconds, 1e-9)));
    }
    progress.finish(fmt::format("loss {:.4f}  {:.1f} s", average, millisSince(epochStart) / 1e3));
    copyParams(*trainer, *evaluator);
    heldOutLoss = meanLoss(*evaluator, m, heldOut, heldOutStarts);
    fmt::print("epoch {}/{} ({} steps, {} characters): train loss {:.4f}, held-out loss {:.4f} "
               "(unigram baseline {:.4f})\n",
               epoch, epochs, s, s * m.batch * m.tokens, average, heldOutLoss, unigram);
  }
  double trainSeconds = millisSince(trainStart) / 1e3;
  // "Well below": at least half a nat per character better than the
  // frequencies.
  bool learned = heldOutLoss < unigram - 0.5;
  fmt::print("held-out loss {:.4f} after {:.0f} s of training ({:.1f} ms/step, evaluation "
             "included): {} the unigram baseline {:.4f}\n",
             heldOutLoss, trainSeconds, 1e3 * trainSeconds / double(steps),
             learned ? "well below" : "NOT well below", unigram);

  std::mt19937 sampler(static_cast<uint32_t>(options.seed));
  fmt::print("samples (temperature 0.8):\n");
  for (const std::string &fortune : sampleFortunes(*evaluator, m, 3, 300, 0.8, sampler)) {
    std::string indented = "  " + fortune;
    for (size_t at = indented.find('\n'); at != std::string::npos;
         at = indented.find('\n', at + 1))
      indented.insert(at + 1, "  ");
    fmt::print("{}\n  --\n", indented);
  }

  saveDemoCheckpoint(*trainer, options.checkpoint,
                     fmt::format("fortunes_{}.safetensors", modelName));
  return learned ? 0 : 1;
}

} // namespace stepc::cli
