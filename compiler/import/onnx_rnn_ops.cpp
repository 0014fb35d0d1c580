// RNN, GRU and LSTM, unrolled over the sequence into ordinary graph ops: one
// matmul for the input projection of every step at once, then per step a
// matmul with the recurrent weights and the gate arithmetic. Being graph ops,
// the unrolled cells train: grad() differentiates through every step.
#include "onnx_ops.h"

#include <fmt/format.h>

namespace stepc::onnx_import {

namespace {

enum class Cell { Rnn, Gru, Lstm };

struct Activation {
  std::string name;
  double alpha = 0, beta = 0;
};

Value activate(NodeContext &c, const Activation &f, Value x) {
  if (f.name == "Sigmoid")
    return sigmoid(x);
  if (f.name == "Tanh")
    return tanh(x);
  if (f.name == "Relu")
    return relu(x);
  if (f.name == "HardSigmoid")
    return maximum(minimum(add(mul(x, scalarOf(c, x, f.alpha)), scalarOf(c, x, f.beta)),
                           scalarOf(c, x, 1)),
                   scalarOf(c, x, 0));
  if (f.name == "Softsign")
    return div(x, add(abs(x), scalarOf(c, x, 1)));
  c.unsupported(fmt::format("activation '{}' (Sigmoid, Tanh, Relu, HardSigmoid and Softsign are "
                            "supported)",
                            f.name));
}

// The rows [g*hidden, (g+1)*hidden) of a weight [gates*hidden, ...] along
// its last axis (a gate's pre-activation).
Value gate(Value v, int64_t g, int64_t hidden) {
  return sliceAxis(v, v.rank() - 1, g * hidden, (g + 1) * hidden);
}

void recurrent(NodeContext &c, Cell cell) {
  Value x = c.in(0), w = c.in(1), r = c.in(2);
  const int64_t gates = cell == Cell::Rnn ? 1 : cell == Cell::Gru ? 3 : 4;
  std::string direction = c.attrString("direction", "forward");
  int64_t dirs = direction == "bidirectional" ? 2 : 1;
  if (direction != "forward" && direction != "reverse" && direction != "bidirectional")
    c.invalid(fmt::format("direction '{}' is not one of forward, reverse, bidirectional",
                          direction));
  bool batchFirst = c.attrInt("layout", 0) != 0;
  if (x.rank() != 3)
    c.invalid(fmt::format("X must be [seq, batch, input], found {}", typeString(x.type())));
  if (!isFloat(x.dtype()))
    c.unsupportedDType("X", x.dtype());
  if (batchFirst)
    x = transpose(x, {1, 0, 2});
  int64_t seq = x.dim(0), batch = x.dim(1), inputSize = x.dim(2);
  int64_t hidden = w.rank() == 3 ? w.dim(1) / gates : 0;
  if (c.hasAttr("hidden_size"))
    hidden = c.attrInt("hidden_size");
  if (w.type().shape != Shape{dirs, gates * hidden, inputSize} ||
      r.type().shape != Shape{dirs, gates * hidden, hidden})
    c.invalid(fmt::format("W {} and R {} do not match {} direction(s), {} gates of hidden size "
                          "{} and input size {}",
                          typeString(w.type()), typeString(r.type()), dirs, gates, hidden,
                          inputSize));
  if (c.has(4)) {
    for (int64_t len : c.requireInts(4, "sequence_lens"))
      if (len != seq)
        c.unsupported("sequence_lens shorter than the sequence (padded batches) are not "
                      "supported");
  }
  if (cell == Cell::Lstm && c.attrInt("input_forget", 0) != 0)
    c.unsupported("input_forget = 1 is not supported");
  std::vector<Activation> acts;
  {
    std::vector<std::string> names;
    if (const auto *a = c.typedAttr("activations", onnx::AttributeProto::STRINGS))
      names.assign(a->strings().begin(), a->strings().end());
    std::vector<double> alphas = c.attrFloats("activation_alpha");
    std::vector<double> betas = c.attrFloats("activation_beta");
    std::vector<std::string> defaults = cell == Cell::Rnn   ? std::vector<std::string>{"Tanh"}
                                        : cell == Cell::Gru ? std::vector<std::string>{"Sigmoid",
                                                                                       "Tanh"}
                                                            : std::vector<std::string>{
                                                                  "Sigmoid", "Tanh", "Tanh"};
    for (int64_t d = 0; d < dirs; ++d)
      for (size_t i = 0; i < defaults.size(); ++i) {
        size_t at = static_cast<size_t>(d) * defaults.size() + i;
        Activation f{names.empty() ? defaults[i] : (at < names.size() ? names[at] : "")};
        if (f.name.empty())
          c.invalid(fmt::format("{} activations for {} direction(s)", names.size(), dirs));
        if (f.name == "HardSigmoid")
          f.alpha = 0.2, f.beta = 0.5;
        if (at < alphas.size())
          f.alpha = alphas[at];
        if (at < betas.size())
          f.beta = betas[at];
        acts.push_back(f);
      }
  }
  double clip = c.attrFloat("clip", 0);
  bool clipped = c.hasAttr("clip");
  bool linearBeforeReset = c.attrInt("linear_before_reset", 0) != 0;
  auto clipOf = [&](Value v) {
    return clipped ? minimum(maximum(v, scalarOf(c, v, -clip)), scalarOf(c, v, clip)) : v;
  };

  std::vector<Value> ys, lastH, lastC;
  for (int64_t d = 0; d < dirs; ++d) {
    bool reverse = direction == "reverse" || d == 1;
    const Activation *f = &acts[d * (cell == Cell::Rnn ? 1 : cell == Cell::Gru ? 2 : 3)];
    Value wd = reshape(sliceAxis(w, 0, d, d + 1), {gates * hidden, inputSize});
    Value rd = reshape(sliceAxis(r, 0, d, d + 1), {gates * hidden, hidden});
    Value rt = transpose(rd, {1, 0});
    // Every step's input projection in one matmul: [seq*batch, gates*hidden].
    Value xw = matmul(reshape(x, {seq * batch, inputSize}), transpose(wd, {1, 0}));
    xw = reshape(xw, {seq, batch, gates * hidden});
    Value wb, rb;
    if (c.has(3)) {
      Value bd = reshape(sliceAxis(c.in(3), 0, d, d + 1), {2 * gates * hidden});
      wb = sliceAxis(bd, 0, 0, gates * hidden);
      rb = sliceAxis(bd, 0, gates * hidden, 2 * gates * hidden);
      xw = add(xw, wb);
    }
    auto initial = [&](size_t input) {
      return c.has(input) ? reshape(sliceAxis(c.in(input), 0, d, d + 1), {batch, hidden})
                          : c.constantOf(Tensor(x.dtype(), {batch, hidden}));
    };
    Value h = initial(5);
    Value cState = cell == Cell::Lstm ? initial(6) : Value();
    Value peep;
    if (cell == Cell::Lstm && c.has(7))
      peep = reshape(sliceAxis(c.in(7), 0, d, d + 1), {3 * hidden});
    std::vector<Value> steps(static_cast<size_t>(seq));
    for (int64_t s = 0; s < seq; ++s) {
      int64_t t = reverse ? seq - 1 - s : s;
      Value xt = reshape(sliceAxis(xw, 0, t, t + 1), {batch, gates * hidden});
      Value hr = matmul(h, rt);
      if (rb.valid())
        hr = add(hr, rb);
      switch (cell) {
      case Cell::Rnn: h = activate(c, f[0], clipOf(add(xt, hr))); break;
      case Cell::Gru: {
        Value z = activate(c, f[0], clipOf(add(gate(xt, 0, hidden), gate(hr, 0, hidden))));
        Value reset = activate(c, f[0], clipOf(add(gate(xt, 1, hidden), gate(hr, 1, hidden))));
        Value candidate;
        if (linearBeforeReset) {
          // rt * (Ht-1 Rh^T + Rbh)
          candidate = activate(c, f[1], clipOf(add(gate(xt, 2, hidden), mul(reset, gate(hr, 2, hidden)))));
        } else {
          // (rt * Ht-1) Rh^T + Rbh
          Value rh = matmul(mul(reset, h), gate(rt, 2, hidden));
          if (rb.valid())
            rh = add(rh, gate(rb, 2, hidden));
          candidate = activate(c, f[1], clipOf(add(gate(xt, 2, hidden), rh)));
        }
        h = add(mul(sub(scalarOf(c, z, 1), z), candidate), mul(z, h));
        break;
      }
      case Cell::Lstm: {
        Value pre[4];
        for (int64_t g = 0; g < 4; ++g)
          pre[g] = add(gate(xt, g, hidden), gate(hr, g, hidden)); // i, o, f, c
        if (peep.valid()) {
          pre[0] = add(pre[0], mul(gate(peep, 0, hidden), cState));
          pre[2] = add(pre[2], mul(gate(peep, 2, hidden), cState));
        }
        Value in = activate(c, f[0], clipOf(pre[0]));
        Value forget = activate(c, f[0], clipOf(pre[2]));
        Value candidate = activate(c, f[1], clipOf(pre[3]));
        cState = add(mul(forget, cState), mul(in, candidate));
        Value o = pre[1];
        if (peep.valid())
          o = add(o, mul(gate(peep, 1, hidden), cState));
        h = mul(activate(c, f[0], clipOf(o)), activate(c, f[2], cState));
        break;
      }
      }
      steps[t] = reshape(h, {1, 1, batch, hidden});
    }
    ys.push_back(seq == 1 ? steps[0] : concat(steps, 0)); // [seq, 1, batch, hidden]
    lastH.push_back(reshape(h, {1, batch, hidden}));
    if (cell == Cell::Lstm)
      lastC.push_back(reshape(cState, {1, batch, hidden}));
  }
  auto join = [](std::vector<Value> &parts, int64_t axis) {
    return parts.size() == 1 ? parts[0] : concat(parts, axis);
  };
  Value y = join(ys, 1), yh = join(lastH, 0);
  Value yc = cell == Cell::Lstm ? join(lastC, 0) : Value();
  if (batchFirst) {
    y = transpose(y, {2, 0, 1, 3}); // [batch, seq, dirs, hidden]
    yh = transpose(yh, {1, 0, 2});
    if (yc.valid())
      yc = transpose(yc, {1, 0, 2});
  }
  c.setOutput(0, y);
  c.setOutput(1, yh);
  if (yc.valid())
    c.setOutput(2, yc);
}

} // namespace

void mapRnn(NodeContext &c) { recurrent(c, Cell::Rnn); }
void mapGru(NodeContext &c) { recurrent(c, Cell::Gru); }
void mapLstm(NodeContext &c) { recurrent(c, Cell::Lstm); }

} // namespace stepc::onnx_import
