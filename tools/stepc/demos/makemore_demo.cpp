// `stepc demo makemore`: character-level language models on the words of
// Debian's wamerican list, as in Karpathy's makemore: a bigram table
// (examples/bigram.sg) or an MLP over embeddings of the previous three
// characters (examples/makemore.sg). Trains the compiled step with Adam,
// reports train and held-out loss, then samples new words.
#include "commands.h"
#include "datasets.h"
#include "training.h"

#include "stepc/compile.h"
#include "stepc/text.h"
#include "stepc/train.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <random>
#include <unordered_set>

namespace stepc::cli {
namespace {

// '.' = 0 starts and ends a word; a..z = 1..26.
constexpr int kVocab = 27;
constexpr const char *kWordsPath = "/usr/share/dict/american-english";

char symbolChar(int32_t symbol) { return symbol == 0 ? '.' : static_cast<char>('a' + symbol - 1); }

// Every (context, next character) pair of a word list: a word is read after
// `block` '.'s and is followed by one.
struct Pairs {
  int64_t block = 1;
  std::vector<int32_t> contexts; // count() * block
  std::vector<int32_t> next;
  int64_t count() const { return static_cast<int64_t>(next.size()); }
};

Pairs makePairs(const std::vector<std::string> &words, int64_t block) {
  Pairs pairs;
  pairs.block = block;
  std::vector<int32_t> context(static_cast<size_t>(block));
  for (const std::string &word : words) {
    std::fill(context.begin(), context.end(), 0);
    for (size_t i = 0; i <= word.size(); ++i) {
      int32_t next = i < word.size() ? word[i] - 'a' + 1 : 0;
      pairs.contexts.insert(pairs.contexts.end(), context.begin(), context.end());
      pairs.next.push_back(next);
      std::shift_left(context.begin(), context.end(), 1);
      context.back() = next;
    }
  }
  return pairs;
}

// What the driver needs of a model: an i32 input `target` [B], one other i32
// input holding the context ([B] for one character, [B,k] for k), a value
// named `logits` [B,27] and the output `loss`.
struct LanguageModel {
  Graph graph;
  std::string context;
  TensorType contextType, targetType;
  int64_t batch = 0, block = 1;
};

LanguageModel loadLanguageModel(const std::string &path) {
  LanguageModel m;
  m.graph = parseGraphFile(path);
  const Graph &g = m.graph;
  auto target = g.findNamed("target"), logits = g.findNamed("logits");
  std::vector<ValueId> others;
  for (ValueId id : g.inputs())
    if (g.node(id).name != "target")
      others.push_back(id);
  auto expected = [&](const std::string &what) {
    return Error(fmt::format("{}: the makemore demo needs {}", path, what));
  };
  if (!target || g.node(*target).op != OpKind::Input || others.size() != 1)
    throw expected("two inputs: 'target' (next characters) and one holding the context");
  m.context = g.node(others[0]).name;
  m.contextType = g.type(others[0]);
  m.targetType = g.type(*target);
  if (m.targetType.dtype != DType::I32 || m.targetType.rank() != 1)
    throw expected(fmt::format("'target' of type i32[B], found {}", typeString(m.targetType)));
  m.batch = m.targetType.shape[0];
  if (m.contextType.dtype != DType::I32 || m.contextType.rank() < 1 ||
      m.contextType.rank() > 2 || m.contextType.shape[0] != m.batch)
    throw expected(fmt::format("'{}' of type i32[{}] or i32[{},K], found {}", m.context, m.batch,
                               m.batch, typeString(m.contextType)));
  m.block = m.contextType.rank() == 2 ? m.contextType.shape[1] : 1;
  if (!logits || g.type(*logits) != TensorType{DType::F32, {m.batch, kVocab}})
    throw expected(fmt::format("a value named 'logits' of type f32[{},{}]", m.batch, kVocab));
  if (!g.findOutput("loss"))
    throw expected("an output named 'loss'");
  return m;
}

// Pairs `order[first .. first + batch)` as the model's inputs.
TensorMap makeBatch(const LanguageModel &m, const Pairs &pairs, const std::vector<int64_t> &order,
                    int64_t first) {
  Tensor context(m.contextType), target(m.targetType);
  for (int64_t b = 0; b < m.batch; ++b) {
    int64_t i = order[static_cast<size_t>(first + b)];
    std::copy_n(pairs.contexts.begin() + i * m.block, m.block,
                context.data<int32_t>() + b * m.block);
    target.data<int32_t>()[b] = pairs.next[static_cast<size_t>(i)];
  }
  TensorMap inputs;
  inputs.emplace(m.context, std::move(context));
  inputs.emplace("target", std::move(target));
  return inputs;
}

// Mean loss over the whole batches of `pairs`, in order.
double meanLoss(Executable &evaluator, const LanguageModel &m, const Pairs &pairs) {
  std::vector<int64_t> order(static_cast<size_t>(pairs.count()));
  std::iota(order.begin(), order.end(), 0);
  int64_t batches = pairs.count() / m.batch;
  double sum = 0;
  for (int64_t i = 0; i < batches; ++i)
    sum += evaluator.step(makeBatch(m, pairs, order, i * m.batch)).at("loss").real(0);
  return sum / static_cast<double>(std::max<int64_t>(batches, 1));
}

// Samples `count` words, a batch of them at a time: each row of the batch
// extends its own word by one character per step, drawn from the softmax of
// its logits, until it draws '.' or reaches `maxLength`.
std::vector<std::string> sampleWords(Executable &evaluator, const LanguageModel &m, int count,
                                     int maxLength, std::mt19937 &rng) {
  std::vector<std::string> words;
  while (static_cast<int>(words.size()) < count) {
    int64_t rows = std::min<int64_t>(m.batch, count - static_cast<int>(words.size()));
    std::vector<std::string> round(static_cast<size_t>(rows));
    std::vector<bool> done(static_cast<size_t>(rows), false);
    Tensor context(m.contextType); // all '.': the start of a word
    for (int length = 0; length < maxLength; ++length) {
      TensorMap inputs;
      inputs.emplace(m.context, context);
      inputs.emplace("target", Tensor(m.targetType));
      Tensor logits = evaluator.step(inputs).at("logits");
      for (int64_t r = 0; r < rows; ++r) {
        if (done[static_cast<size_t>(r)])
          continue;
        const float *row = logits.data<float>() + r * kVocab;
        int32_t next = sampleSymbol(row, kVocab, 1.0, rng);
        int32_t *ctx = context.data<int32_t>() + r * m.block;
        std::shift_left(ctx, ctx + m.block, 1);
        ctx[m.block - 1] = next;
        if (next == 0)
          done[static_cast<size_t>(r)] = true;
        else
          round[static_cast<size_t>(r)] += symbolChar(next);
      }
      if (std::all_of(done.begin(), done.end(), [](bool d) { return d; }))
        break;
    }
    words.insert(words.end(), round.begin(), round.end());
  }
  return words;
}

} // namespace

int makemoreDemo(const DemoOptions &options) {
  std::string modelName = options.model.empty() ? "makemore" : options.model;
  std::string modelPath = options.examples + "/" + modelName + ".sg";
  LanguageModel m = loadLanguageModel(modelPath);
  // The table only needs a few thousand large steps; the MLP wants smaller ones.
  bool bigram = m.block == 1;
  double lr = options.lr.value_or(bigram ? 0.05 : 3e-3);
  int64_t steps = options.steps > 0 ? options.steps : bigram ? 3000 : 20000;

  // Split by word, so no held-out word was seen in training.
  std::vector<std::string> words = readWords(kWordsPath);
  std::mt19937_64 rng(options.seed);
  size_t trainWords = shuffleForHeldOut(words, rng);
  Pairs train = makePairs({words.begin(), words.begin() + trainWords}, m.block);
  Pairs heldOut = makePairs({words.begin() + trainWords, words.end()}, m.block);
  if (train.count() < m.batch || heldOut.count() < m.batch)
    throw Error(fmt::format("{}: too few words for a batch of {}", kWordsPath, m.batch));
  fmt::print("{}: {} words; {} training pairs (90% of the words), {} held out\n", kWordsPath,
             words.size(), train.count(), heldOut.count());
  fmt::print("model {} ({} character{} of context, batch {}), Adam lr {:g} (cosine to {:g}), {} "
             "steps\n",
             modelPath, m.block, m.block == 1 ? "" : "s", m.batch, lr, lr / 10, steps);

  // Cosine decay to a tenth of the rate: the last steps refine instead of
  // bouncing around the minimum (makemore drops the rate 10x near the end).
  Optimizer opt = Optimizer::adam();
  opt.lr = lr;
  opt.schedule = {.kind = Schedule::Kind::Cosine, .totalSteps = steps, .minLr = lr / 10};
  auto compileStart = Clock::now();
  auto trainer = compileJit(trainStep(m.graph, "loss", opt));
  fmt::print("compiled the training step: {} kernels in {:.0f} ms\n",
             trainer->spec().kernels.size(), millisSince(compileStart));

  std::vector<int64_t> order(static_cast<size_t>(train.count()));
  std::iota(order.begin(), order.end(), 0);
  int64_t next = train.count(); // reshuffle before the first batch
  Progress progress("train", steps);
  double average = 0; // exponential moving average of the batch losses
  auto trainStart = Clock::now();
  for (int64_t s = 0; s < steps; ++s) {
    if (next + m.batch > train.count()) {
      std::shuffle(order.begin(), order.end(), rng);
      next = 0;
    }
    double loss = trainer->step(makeBatch(m, train, order, next)).at("loss").real(0);
    next += m.batch;
    average = s == 0 ? loss : 0.99 * average + 0.01 * loss;
    double seconds = std::chrono::duration<double>(Clock::now() - trainStart).count();
    progress.update(s + 1, fmt::format("loss {:.4f}  {:.0f} steps/s", average,
                                       double(s + 1) / std::max(seconds, 1e-9)));
  }
  double trainSeconds = std::chrono::duration<double>(Clock::now() - trainStart).count();
  progress.finish(fmt::format("loss {:.4f}  {:.1f} s, {:.3f} ms/step", average, trainSeconds,
                              1e3 * trainSeconds / double(steps)));

  // Evaluate and sample: the same model with its logits as an output.
  Graph eval = m.graph;
  eval.addOutput("logits", *m.graph.findNamed("logits"));
  auto evaluator = compileJit(eval);
  copyParams(*trainer, *evaluator);
  double trainLoss = meanLoss(*evaluator, m, train), heldOutLoss = meanLoss(*evaluator, m, heldOut);
  // Success means the model learned something: it beats a uniform guess on
  // words it never saw.
  double uniform = std::log(double(kVocab));
  bool learned = heldOutLoss < uniform;
  fmt::print("loss after {} steps: train {:.4f}, held out {:.4f}, {} a uniform guess ({:.4f})\n",
             steps, trainLoss, heldOutLoss, learned ? "below" : "NOT below", uniform);

  std::mt19937 sampler(static_cast<uint32_t>(options.seed));
  std::unordered_set<std::string> known(words.begin(), words.end());
  fmt::print("samples ('*': not in the word list):\n");
  for (const std::string &word : sampleWords(*evaluator, m, 10, 20, sampler))
    fmt::print("  {}{}\n", word, known.contains(word) ? "" : " *");

  saveDemoCheckpoint(*trainer, options.checkpoint,
                     fmt::format("wamerican_{}.safetensors", modelName));
  return learned ? 0 : 1;
}

} // namespace stepc::cli
