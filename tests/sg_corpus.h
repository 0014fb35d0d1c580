// Valid .sg texts shared by the text-format tests and the parser fuzzer (which
// mutates them). Together they use every op, every initializer, every kind
// of attribute value and every composite.
#pragma once

#include <string_view>

namespace stepc::testing {

// Every primitive op, with odd spacing and comments on purpose.
inline constexpr std::string_view kEveryOpText = R"sg(
# Every op in ops.def at least once.
graph every_op {
  input %x : f32[2,3]
  input %y : f32[2, 3]   // C++-style comments work too
  input %b : bool[2,3]
  input %i : i32[2]
  input %seed : i64[]
  input %img : f32[1,2,5,5]
  param %w : f32[3,4] = he_uniform(seed=7)
  param %k : f32[4,2,3,3] = normal(mean=-0.5, std=0.02, seed=-3)
  param %u : f32[3] = uniform(low=-1e-05, high=2.5e+10, seed=9223372036854775807)
  param %c0 : f32[] = constant(value=-0.0)
  param %z : f64[2] = zeros()
  param %o : i32[2] = ones()
  param %hn : f32[2,2] = he_normal(seed=0)
  param %xn : f32[2,2] = xavier_normal(seed=1)
  param %xu : f32[2,2] = xavier_uniform(seed=2)

  %c = constant() {dtype=f32, shape=[2,3], value=1.5}
  %cd = constant() {dtype=f32, shape=[2], data=[1, -2.5]}
  %ci = constant() {dtype=i64, shape=[3], data=[-9223372036854775808, 0, 9223372036854775807]}
  %cinf = constant() {dtype=f32, shape=[], value=-inf}
  %cs = constant() {dtype="f64", shape=[], value=1e-300}
  %io = iota() {axis=0, dtype=i32, shape=[4]}

  %1 = neg(%x)
  %2 = abs(%1)
  %3 = exp(%x)
  %4 = log(%3)
  %5 = sqrt(%3)
  %6 = rsqrt(%3)
  %7 = square(%x)
  %8 = tanh(%x)
  %9 = sigmoid(%x)
  %10 = relu(%x)
  %11 = sin(%x)
  %12 = cos(%x)
  %13 = sign(%x)
  %14 = erf(%x)
  %cast = cast(%x) {dtype=f64} : f64[2,3]

  %add = add(%x, %y)
  %sub = sub(%x, %y)
  %mul = mul(%x, %c0)
  %div = div(%x, %y)
  %pow = pow(%x, %y)
  %max = maximum(%x, %y)
  %min = minimum(%x, %y)
  %rem = rem(%x, %y)
  %eq = eq(%x, %y) : bool[2,3]
  %ne = ne(%x, %y)
  %lt = lt(%x, %y)
  %le = le(%x, %y)
  %gt = gt(%x, %y)
  %ge = ge(%x, %y)
  %sel = select(%b, %x, %y)

  %rs = reduce_sum(%x) {axes=[1], keepdims=0} : f32[2]
  %rm = reduce_mean(%x) {axes=[-1], keepdims=1} : f32[2,1]
  %rx = reduce_max(%x) {axes=[0,1], keepdims=0} : f32[]
  %rn = reduce_min(%x) {axes=[], keepdims=0}
  %am = argmax(%x) {axis=-1, keepdims=0} : i64[2]

  %mm = matmul(%x, %w) : f32[2,4]
  %tr = transpose(%x) {perm=[1,0]} : f32[3,2]
  %re = reshape(%x) {shape=[3,-1]} : f32[3,2]
  %bt = broadcast_to(%u) {shape=[2,3]}
  %sl = slice(%x) {limits=[2,3], starts=[0,1], strides=[1,2]} : f32[2,1]
  %cc = concat(%x, %y, %c) {axis=0} : f32[6,3]
  %pd = pad(%x) {high=[0,1], low=[1,0], value=inf} : f32[3,4]
  %g = gather(%x, %i) {axis=0} : f32[2,3]
  %oh = one_hot(%i) {depth=3, dtype=f32} : f32[2,3]

  %cv = conv2d(%img, %k) {dilation=[1,1], groups=1, padding=[1,1], stride=[2,2]} : f32[1,4,3,3]
  %mp = max_pool2d(%img) {kernel=[2,2], padding=[0,0], stride=[2,2]} : f32[1,2,2,2]
  %ap = avg_pool2d(%img) {count_include_pad=1, kernel=[3,3], padding=[1,1], stride=[1,1]}
  %dr = dropout(%x, %seed) {rate=0.25}
  %ar = all_reduce(%x) {reduction=mean} : f32[2,3]
  %pdi = pad(%x) {high=[0,0], interior=[1,0], low=[0,0], value=0.0} : f32[3,3]

  # Gradient ops, as grad() emits them.
  %sa = scatter_add(%i, %x) {axis=0, size=5} : f32[5,3]
  %cgi = conv2d_grad_input(%cv, %k) {dilation=[1,1], groups=1, input_hw=[5,5], padding=[1,1], stride=[2,2]} : f32[1,2,5,5]
  %cgw = conv2d_grad_weight(%img, %cv) {dilation=[1,1], groups=1, kernel=[3,3], padding=[1,1], stride=[2,2]} : f32[4,2,3,3]
  %mpg = max_pool2d_grad(%img, %mp) {kernel=[2,2], padding=[0,0], stride=[2,2]} : f32[1,2,5,5]
  %apg = avg_pool2d_grad(%ap) {count_include_pad=1, input_hw=[5,5], kernel=[3,3], padding=[1,1], stride=[1,1]} : f32[1,2,5,5]

  output dropped = %dr
  output conv = %cv
  output pooled = %ap
}
)sg";

// Every composite; they expand into primitive ops.
inline constexpr std::string_view kCompositesText = R"sg(
graph composites {
  input %x : f32[8,16]
  input %labels : i32[8]
  input %q : f32[2,4,8]
  param %w1 : f32[16,32] = he_uniform(seed=1)
  param %b1 : f32[32] = zeros()
  param %w2 : f32[32,10] = xavier_uniform(seed=2)
  param %b2 : f32[10] = constant(value=0.1)
  param %gamma : f32[8] = ones()
  param %beta : f32[8] = zeros()
  %h1 = linear(%x, %w1, %b1) : f32[8,32]
  %a1 = gelu(%h1)
  %l = linear(%a1, %w2)
  %lb = linear(%a1, %w2, %b2)
  %p = softmax(%lb) {axis=-1}
  %lp = log_softmax(%lb) {axis=1}
  %lr = leaky_relu(%lb) {slope=0.2}
  %loss = cross_entropy(%lb, %labels) : f32[]
  %mse = mse(%p, %lr)
  %att = attention(%q, %q, %q) {causal=1} : f32[2,4,8]
  %att2 = attention(%q, %q, %q)
  %n = layer_norm(%att, %gamma, %beta) {eps=1e-06}
  %n1 = layer_norm(%att2)
  output loss = %loss
  output mse = %mse
  output norm = %n
  output norm1 = %n1
  output plain = %l
  output logp = %lp
}
)sg";

// A training step: params take new values after the step.
inline constexpr std::string_view kStepText = R"sg(
graph step {
  input %x : f32[3]
  param %w : f32[3] = uniform(low=-1, high=1, seed=4)
  param %step : i64[] = zeros()
  %one = constant() {dtype=i64, shape=[], value=1}
  %next = add(%step, %one)
  %h = mul(%x, %w)
  %w2 = sub(%w, %h)
  output h = %h
  update %w = %w2
  update %step = %next
}
)sg";

// A small MLP in the form printGraph writes.
inline constexpr std::string_view kCanonicalText = R"sg(graph mlp {
  input %x : f32[128,784]
  param %w1 : f32[784,512] = he_uniform(seed=1)
  %2 = matmul(%x, %w1) : f32[128,512]
  %h = relu(%2) : f32[128,512]
  %c = constant() {dtype=f32, shape=[], value=0.5} : f32[]
  output loss = %h
}
)sg";

// An embedding model for the index checks: gather (and, in its training step,
// its gradient scatter_add) and cross_entropy's checked labels.
inline constexpr std::string_view kEmbeddingText = R"sg(
graph emb {
  input %ctx : i32[16,3]
  input %y : i32[16]
  param %table : f32[27,10] = normal(mean=0, std=1, seed=31)
  param %w : f32[30,27] = normal(mean=0, std=0.3, seed=32)
  %e = gather(%table, %ctx) {axis=0}
  %flat = reshape(%e) {shape=[16,30]}
  %logits = matmul(%flat, %w)
  %loss = cross_entropy(%logits, %y)
  output loss = %loss
}
)sg";

} // namespace stepc::testing
