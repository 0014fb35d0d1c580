// The nanobind module `stepc._stepc`: the C++ API as thin bindings. The
// Python package (python/stepc/*.py) builds the library people use on top of
// it; nothing here tries to read like Python, it only moves data across.
//
// Arrays: inputs are any C-contiguous CPU array that speaks the buffer
// protocol or DLPack (NumPy, PyTorch, JAX); their bytes are copied once into
// the step's arena. Outputs and params are handed to NumPy without a copy: the
// result Tensor moves into a capsule that owns the array's memory.
#include "stepc/autodiff.h"
#include "stepc/builder.h"
#include "stepc/backend.h"
#include "stepc/compile.h"
#include "stepc/cuda.h"
#include "stepc/file.h"
#include "stepc/interpreter.h"
#include "stepc/onnx.h"
#include "stepc/text.h"
#include "stepc/train.h"

#include "commands.h"

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/map.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/unique_ptr.h>
#include <nanobind/stl/variant.h>
#include <nanobind/stl/vector.h>

#include <fmt/format.h>

#include <cstring>
#include <memory>

namespace nb = nanobind;
using namespace nb::literals;

namespace stepc::python {
namespace {

// --- Errors -----------------------------------------------------------------
// stepc.Error is defined in Python (python/stepc/_errors.py: it parses the
// location out of the message); the package hands the class over at import.
nb::object &errorClass() {
  static nb::object *cls = new nb::object(); // leaked: lives as long as Python
  return *cls;
}

void translateErrors(const std::exception_ptr &error, void *) {
  try {
    std::rethrow_exception(error);
  } catch (const stepc::Error &e) {
    if (errorClass().is_valid())
      PyErr_SetString(errorClass().ptr(), e.what());
    else
      PyErr_SetString(PyExc_RuntimeError, e.what());
  }
}

// --- Arrays -----------------------------------------------------------------
using InArray = nb::ndarray<nb::ro, nb::c_contig, nb::device::cpu>;
using OutArray = nb::ndarray<nb::numpy>;

nb::dlpack::dtype dlpackDType(DType dtype) {
  switch (dtype) {
  case DType::F32: return nb::dtype<float>();
  case DType::F64: return nb::dtype<double>();
  case DType::I32: return nb::dtype<int32_t>();
  case DType::I64: return nb::dtype<int64_t>();
  case DType::Bool: return nb::dtype<bool>();
  case DType::F16: return {static_cast<uint8_t>(nb::dlpack::dtype_code::Float), 16, 1};
  case DType::BF16: return {static_cast<uint8_t>(nb::dlpack::dtype_code::Bfloat), 16, 1};
  case DType::I8: return nb::dtype<int8_t>();
  case DType::U8: return nb::dtype<uint8_t>();
  case DType::I16: return nb::dtype<int16_t>();
  case DType::U16: return nb::dtype<uint16_t>();
  case DType::U32: return nb::dtype<uint32_t>();
  case DType::U64: return nb::dtype<uint64_t>();
  }
  return nb::dtype<float>();
}

DType dtypeOfArray(const InArray &a, const std::string &name) {
  nb::dlpack::dtype t = a.dtype();
  if (t.lanes == 1) {
    if (t == nb::dtype<float>()) return DType::F32;
    if (t == nb::dtype<double>()) return DType::F64;
    if (t == nb::dtype<int32_t>()) return DType::I32;
    if (t == nb::dtype<int64_t>()) return DType::I64;
    if (t == nb::dtype<bool>()) return DType::Bool;
    if (t == nb::dtype<int8_t>()) return DType::I8;
    if (t == nb::dtype<uint8_t>()) return DType::U8;
    if (t == nb::dtype<int16_t>()) return DType::I16;
    if (t == nb::dtype<uint16_t>()) return DType::U16;
    if (t == nb::dtype<uint32_t>()) return DType::U32;
    if (t == nb::dtype<uint64_t>()) return DType::U64;
    if (t.code == static_cast<uint8_t>(nb::dlpack::dtype_code::Float) && t.bits == 16)
      return DType::F16;
    if (t.code == static_cast<uint8_t>(nb::dlpack::dtype_code::Bfloat) && t.bits == 16)
      return DType::BF16;
  }
  throw Error(fmt::format("'{}': arrays of this element type (DLPack code {}, {} bits) are not "
                          "supported; use float32, float64, float16, bfloat16, int8..int64, uint8..uint64 or bool",
                          name, int(t.code), int(t.bits)));
}

Tensor toTensor(const std::string &name, const InArray &a) {
  Shape shape;
  for (size_t i = 0; i < a.ndim(); ++i)
    shape.push_back(static_cast<int64_t>(a.shape(i)));
  Tensor t(dtypeOfArray(a, name), shape);
  if (t.nbytes() > 0)
    std::memcpy(t.bytes(), a.data(), t.nbytes());
  return t;
}

// NumPy has no bfloat16 of its own; ml_dtypes' (what JAX uses) stores the
// same 16-bit patterns, so a bf16 array is a uint16 array viewed as it.
nb::object bfloat16Dtype() {
  try {
    // (sys.modules answers a repeated import; kept per call so a test can
    // take ml_dtypes away)
    return nb::module_::import_("ml_dtypes").attr("bfloat16");
  } catch (const nb::python_error &) {
    throw Error("bf16 arrays need the ml_dtypes package (pip install ml_dtypes): NumPy has no "
                "bfloat16 of its own");
  }
}

nb::object toNumpy(Tensor tensor) {
  auto *owned = new Tensor(std::move(tensor));
  nb::capsule owner(owned, [](void *p) noexcept { delete static_cast<Tensor *>(p); });
  std::vector<size_t> shape(owned->shape().begin(), owned->shape().end());
  static std::byte empty[64];
  void *data = owned->nbytes() > 0 ? static_cast<void *>(owned->bytes()) : empty;
  bool bf16 = owned->dtype() == DType::BF16;
  OutArray array(data, shape.size(), shape.data(), owner, nullptr,
                 bf16 ? nb::dtype<uint16_t>() : dlpackDType(owned->dtype()));
  nb::object result = nb::cast(array, nb::rv_policy::reference);
  return bf16 ? result.attr("view")(bfloat16Dtype()) : result;
}

// `array`'s memory viewed as `dtype`. The view owns a copy of `array`:
// when the conversion to a C-contiguous array had to copy (a transposed or
// strided tensor), that copy lives in `array` alone, not in the Python
// object it came from.
template <class... Framework, class Array>
nb::object retyped(const Array &array, nb::dlpack::dtype dtype) {
  auto *held = new Array(array);
  nb::capsule owner(held, [](void *p) noexcept { delete static_cast<Array *>(p); });
  std::vector<size_t> shape;
  for (size_t i = 0; i < array.ndim(); ++i)
    shape.push_back(array.shape(i));
  nb::ndarray<Framework..., nb::ro> view(held->data(), shape.size(), shape.data(), owner, nullptr,
                                      dtype);
  return nb::cast(view, nb::rv_policy::reference);
}

// The bits of a DLPack bfloat16 array (PyTorch's, JAX's) as a NumPy uint16
// array, for the Python side to view as ml_dtypes'.
nb::object bfloat16Bits(const InArray &array) {
  if (dtypeOfArray(array, "array") != DType::BF16)
    throw Error("bfloat16_bits: expected a bfloat16 array");
  return retyped<nb::numpy>(array, nb::dtype<uint16_t>());
}

// An ml_dtypes bfloat16 array, given as its uint16 view, as an array whose
// DLPack type says bfloat16 (NumPy cannot export its bfloat16 by DLPack).
nb::object bfloat16Array(const nb::ndarray<nb::ro, nb::c_contig, nb::device::cpu, uint16_t> &bits) {
  return retyped<>(bits, dlpackDType(DType::BF16));
}

TensorMap toTensorMap(const std::map<std::string, InArray> &arrays) {
  TensorMap tensors;
  for (const auto &[name, array] : arrays)
    tensors.emplace(name, toTensor(name, array));
  return tensors;
}

nb::dict toDict(std::map<std::string, Tensor, std::less<>> tensors) {
  nb::dict out;
  for (auto &[name, tensor] : tensors)
    out[nb::str(name.c_str())] = toNumpy(std::move(tensor));
  return out;
}

// --- Types ------------------------------------------------------------------
DType dtypeNamed(const std::string &name) {
  if (auto d = parseDType(name))
    return *d;
  std::string known;
  for (DType d : kAllDTypes)
    known += fmt::format("{}{}", known.empty() ? "" : ", ", dtypeName(d));
  throw Error(fmt::format("unknown dtype '{}'; expected one of {}", name, known));
}

nb::tuple typeTuple(const TensorType &type) {
  return nb::make_tuple(std::string(dtypeName(type.dtype)), nb::tuple(nb::cast(type.shape)));
}

// (file, line, col) from the Python layer: the user's line that built a node.
using Where = std::tuple<std::string, int, int>;
SourceLoc sourceLoc(const Where &w) {
  return SourceLoc(std::get<0>(w), std::get<1>(w), std::get<2>(w));
}

// --- Building graphs ----------------------------------------------------------
// Every op call stamps its nodes with the Python caller's location, through
// the builder's location override, so the C++ functions' own call sites
// (this file) never appear in a message.
template <class F> Value at(Value anchor, const Where &w, F &&build) {
  if (!anchor.valid())
    throw Error("stepc: an operand is not a value of a graph being built");
  LocationScope scope(*anchor.builder(), sourceLoc(w));
  return build();
}

Init initFrom(const std::string &kind, double a, double b, int64_t seed) {
  return {parseInitKind(kind), a, b, seed};
}

void bindBuilder(nb::module_ &m) {
  nb::class_<Value>(m, "Value")
      .def_prop_ro("dtype", [](const Value &v) { return std::string(dtypeName(v.dtype())); })
      .def_prop_ro("shape", [](const Value &v) { return nb::tuple(nb::cast(v.shape())); })
      .def_prop_ro("id", &Value::id)
      .def("same_builder", [](const Value &a, const Value &b) {
        return a.builder() == b.builder();
      });

  nb::class_<GraphBuilder>(m, "Builder")
      .def(nb::init<std::string>(), "name"_a = "main")
      .def("input",
           [](GraphBuilder &b, std::string name, const std::string &dtype, Shape shape,
              const Where &w) {
             LocationScope scope(b, sourceLoc(w));
             return b.input(std::move(name), dtypeNamed(dtype), std::move(shape));
           },
           "name"_a, "dtype"_a, "shape"_a, "where"_a)
      .def("param",
           [](GraphBuilder &b, std::string name, const std::string &dtype, Shape shape,
              const std::string &init, double a, double bb, int64_t seed, const Where &w) {
             LocationScope scope(b, sourceLoc(w));
             return b.param(std::move(name), dtypeNamed(dtype), std::move(shape),
                            initFrom(init, a, bb, seed));
           },
           "name"_a, "dtype"_a, "shape"_a, "init"_a, "a"_a, "b"_a, "seed"_a, "where"_a)
      .def("output", [](GraphBuilder &b, std::string name, Value v) { b.output(name, v); },
           "name"_a, "value"_a)
      .def("update", [](GraphBuilder &b, Value p, Value v) { b.update(p, v); }, "param"_a,
           "value"_a)
      .def("constant",
           [](GraphBuilder &b, double value, const std::string &dtype, Shape shape,
              const Where &w) {
             LocationScope scope(b, sourceLoc(w));
             return constant(b, value, dtypeNamed(dtype), std::move(shape));
           })
      .def("constant_data",
           [](GraphBuilder &b, std::vector<double> data, const std::string &dtype, Shape shape,
              const Where &w) {
             LocationScope scope(b, sourceLoc(w));
             return constantData(b, std::move(data), dtypeNamed(dtype), std::move(shape));
           })
      .def("iota",
           [](GraphBuilder &b, const std::string &dtype, Shape shape, int64_t axis,
              const Where &w) {
             LocationScope scope(b, sourceLoc(w));
             return iota(b, dtypeNamed(dtype), std::move(shape), axis);
           })
      .def("finish", &GraphBuilder::finish)
      .def("text", [](const GraphBuilder &b) { return printGraph(b.graph()); });

  // One binding per builder function: the C++ builder is the single place
  // that knows each op's attributes.
#define STEPC_UNARY(py, fn)                                                                        \
  m.def(py, [](Value x, const Where &w) { return at(x, w, [&] { return fn(x); }); }, "x"_a,       \
        "where"_a);
  STEPC_UNARY("neg", neg)
  STEPC_UNARY("abs", abs)
  STEPC_UNARY("exp", exp)
  STEPC_UNARY("log", log)
  STEPC_UNARY("sqrt", sqrt)
  STEPC_UNARY("rsqrt", rsqrt)
  STEPC_UNARY("square", square)
  STEPC_UNARY("tanh", tanh)
  STEPC_UNARY("sigmoid", sigmoid)
  STEPC_UNARY("relu", relu)
  STEPC_UNARY("sin", sin)
  STEPC_UNARY("cos", cos)
  STEPC_UNARY("sign", sign)
  STEPC_UNARY("erf", erf)
  STEPC_UNARY("gelu", gelu)
  STEPC_UNARY("transpose_last2", transposeLast2)
#undef STEPC_UNARY
#define STEPC_BINARY(py, fn)                                                                       \
  m.def(                                                                                          \
      py, [](Value a, Value b, const Where &w) { return at(a, w, [&] { return fn(a, b); }); },     \
      "a"_a, "b"_a, "where"_a);
  STEPC_BINARY("add", add)
  STEPC_BINARY("sub", sub)
  STEPC_BINARY("mul", mul)
  STEPC_BINARY("div", div)
  STEPC_BINARY("pow", pow)
  STEPC_BINARY("maximum", maximum)
  STEPC_BINARY("minimum", minimum)
  STEPC_BINARY("eq", eq)
  STEPC_BINARY("ne", ne)
  STEPC_BINARY("lt", lt)
  STEPC_BINARY("le", le)
  STEPC_BINARY("gt", gt)
  STEPC_BINARY("ge", ge)
  STEPC_BINARY("matmul", matmul)
  STEPC_BINARY("cross_entropy", crossEntropy)
  STEPC_BINARY("mse", mse)
#undef STEPC_BINARY
#define STEPC_REDUCE(py, fn)                                                                       \
  m.def(py, [](Value x, std::optional<std::vector<int64_t>> axes, bool keepdims,                 \
                const Where &w) {                                                                  \
    return at(x, w, [&] { return fn(x, axes ? Axes(*axes) : Axes::all(), keepdims); });          \
  }, "x"_a, "axes"_a.none(), "keepdims"_a, "where"_a);
  STEPC_REDUCE("sum", sum)
  STEPC_REDUCE("mean", mean)
  STEPC_REDUCE("max", max)
  STEPC_REDUCE("min", min)
#undef STEPC_REDUCE

  m.def("scalar_like", [](Value like, double value, const Where &w) {
    return at(like, w, [&] { return scalarLike(like, value); });
  });
  m.def("cast", [](Value x, const std::string &dtype, const Where &w) {
    return at(x, w, [&] { return cast(x, dtypeNamed(dtype)); });
  });
  m.def("select", [](Value c, Value a, Value b, const Where &w) {
    return at(c, w, [&] { return select(c, a, b); });
  });
  m.def("argmax", [](Value x, int64_t axis, bool keepdims, const Where &w) {
    return at(x, w, [&] { return argmax(x, axis, keepdims); });
  });
  m.def("transpose", [](Value x, std::vector<int64_t> perm, const Where &w) {
    return at(x, w, [&] { return transpose(x, perm); });
  });
  m.def("reshape", [](Value x, Shape shape, const Where &w) {
    return at(x, w, [&] { return reshape(x, shape); });
  });
  m.def("broadcast_to", [](Value x, Shape shape, const Where &w) {
    return at(x, w, [&] { return broadcastTo(x, shape); });
  });
  m.def("slice", [](Value x, std::vector<int64_t> starts, std::vector<int64_t> limits,
                    std::vector<int64_t> strides, const Where &w) {
    return at(x, w, [&] { return slice(x, starts, limits, strides); });
  });
  m.def("concat", [](std::vector<Value> xs, int64_t axis, const Where &w) {
    if (xs.empty())
      throw Error("concat: expected at least one operand, got none");
    return at(xs[0], w, [&] { return concat(xs, axis); });
  });
  m.def("pad", [](Value x, std::vector<int64_t> low, std::vector<int64_t> high, double value,
                  const Where &w) { return at(x, w, [&] { return pad(x, low, high, value); }); });
  m.def("gather", [](Value data, Value indices, int64_t axis, const Where &w) {
    return at(data, w, [&] { return gather(data, indices, axis); });
  });
  m.def("one_hot", [](Value indices, int64_t depth, const std::string &dtype, const Where &w) {
    return at(indices, w, [&] { return oneHot(indices, depth, dtypeNamed(dtype)); });
  });
  m.def("conv2d", [](Value x, Value wt, std::vector<int64_t> stride, std::vector<int64_t> padding,
                     std::vector<int64_t> dilation, int64_t groups, const Where &w) {
    return at(x, w, [&] { return conv2d(x, wt, {stride, padding, dilation, groups}); });
  });
  m.def("max_pool2d", [](Value x, std::vector<int64_t> kernel, std::vector<int64_t> stride,
                         std::vector<int64_t> padding, const Where &w) {
    return at(x, w, [&] { return maxPool2d(x, {kernel, stride, padding, true}); });
  });
  m.def("avg_pool2d", [](Value x, std::vector<int64_t> kernel, std::vector<int64_t> stride,
                         std::vector<int64_t> padding, bool countIncludePad, const Where &w) {
    return at(x, w, [&] { return avgPool2d(x, {kernel, stride, padding, countIncludePad}); });
  });
  m.def("dropout", [](Value x, Value seed, double rate, const Where &w) {
    return at(x, w, [&] { return dropout(x, seed, rate); });
  });
  m.def("all_reduce", [](Value x, const std::string &reduction, const Where &w) {
    return at(x, w, [&] { return allReduce(x, reduction); });
  });
  m.def("linear", [](Value x, Value wt, std::optional<Value> b, const Where &w) {
    return at(x, w, [&] { return linear(x, wt, b.value_or(Value())); });
  });
  m.def("leaky_relu", [](Value x, double slope, const Where &w) {
    return at(x, w, [&] { return leakyRelu(x, slope); });
  });
  m.def("softmax", [](Value x, int64_t axis, const Where &w) {
    return at(x, w, [&] { return softmax(x, axis); });
  });
  m.def("log_softmax", [](Value x, int64_t axis, const Where &w) {
    return at(x, w, [&] { return logSoftmax(x, axis); });
  });
  m.def("layer_norm", [](Value x, Value gamma, Value beta, double eps, const Where &w) {
    return at(x, w, [&] { return layerNorm(x, gamma, beta, eps); });
  });
  m.def("attention", [](Value q, Value k, Value v, bool causal, const Where &w) {
    return at(q, w, [&] { return attention(q, k, v, causal); });
  });
  m.def("gradients", [](Value loss, std::vector<Value> wrt) {
    std::vector<std::string> warnings;
    std::vector<Value> grads = gradients(loss, wrt, &warnings);
    return std::make_pair(grads, warnings);
  });
}

// --- Graphs -------------------------------------------------------------------
nb::list slotList(const Graph &g, const std::vector<ValueId> &ids) {
  nb::list out;
  for (ValueId id : ids)
    out.append(nb::make_tuple(g.node(id).name, typeTuple(g.type(id))));
  return out;
}

Schedule scheduleFrom(const std::string &kind, int64_t stepSize, double gamma, int64_t totalSteps,
                      double minLr) {
  return {parseScheduleKind(kind), stepSize, gamma, totalSteps, minLr};
}

void bindGraph(nb::module_ &m) {
  nb::class_<Graph>(m, "Graph")
      .def_rw("name", &Graph::name)
      .def_prop_ro("inputs", [](const Graph &g) { return slotList(g, g.inputs()); })
      .def_prop_ro("params", [](const Graph &g) { return slotList(g, g.params()); })
      .def_prop_ro("outputs",
                   [](const Graph &g) {
                     nb::list out;
                     for (const GraphOutput &o : g.outputs)
                       out.append(nb::make_tuple(o.name, typeTuple(g.type(o.value))));
                     return out;
                   })
      .def_prop_ro("num_updates", [](const Graph &g) { return g.updates.size(); })
      .def_prop_ro("num_nodes", [](const Graph &g) { return g.size(); })
      .def("text", [](const Graph &g) { return printGraph(g); })
      .def("save",
           [](const Graph &g, const std::string &path) {
             writeFileAtomically(path, printGraph(g));
           })
      .def("initial_params", [](const Graph &g) { return toDict(initialParams(g)); })
      .def("random_inputs",
           [](const Graph &g, uint64_t seed) { return toDict(randomInputs(g, seed)); });

  m.def("parse", [](const std::string &text, const std::string &filename) {
    return parseGraph(text, filename);
  });
  m.def("load", [](const std::string &path) { return parseGraphFile(path); });
  m.def("import_onnx", [](const std::string &path, const std::map<std::string, InArray> &values) {
    OnnxImportOptions options;
    options.inputValues = toTensorMap(values);
    OnnxModel model = importOnnx(path, options);
    return std::make_pair(std::move(model.graph), toDict(std::move(model.params)));
  });
  m.def("grad", [](const Graph &g, const std::string &loss, std::vector<std::string> wrt) {
    GradResult r = grad(g, loss, std::move(wrt));
    return std::make_pair(std::move(r.graph), r.warnings);
  });
  m.def("train_step",
        [](const Graph &g, const std::string &loss, const std::string &kind,
           std::optional<double> lr, nb::dict hyper, const std::string &schedule,
           int64_t stepSize, double gamma, int64_t totalSteps, double minLr,
           const std::string &mixedPrecision) {
          Optimizer o;
          o.kind = parseOptimizerKind(kind);
          if (o.kind == Optimizer::Kind::AdamW)
            o.weightDecay = 0.01;
          o.lr = lr;
          for (auto [key, value] : hyper) {
            std::string k = nb::cast<std::string>(key);
            double v = nb::cast<double>(value);
            if (k == "momentum") o.momentum = v;
            else if (k == "alpha") o.alpha = v;
            else if (k == "beta1") o.beta1 = v;
            else if (k == "beta2") o.beta2 = v;
            else if (k == "eps") o.eps = v;
            else if (k == "weight_decay") o.weightDecay = v;
            else if (k == "clip_norm") o.clipNorm = v;
            else
              throw Error(fmt::format("train_step: unknown optimizer setting '{}'; expected "
                                      "momentum, alpha, beta1, beta2, eps, weight_decay or "
                                      "clip_norm",
                                      k));
          }
          o.schedule = scheduleFrom(schedule, stepSize, gamma, totalSteps, minLr);
          MixedPrecision mixed;
          if (!mixedPrecision.empty())
            mixed.compute = parseMixedPrecision(mixedPrecision, "train_step: mixed_precision");
          return trainStep(g, loss, o, {}, mixed);
        });
}

// --- Compiled steps -----------------------------------------------------------
// One interface over the three backends (stepc/backend.h): each is an
// Executable, the interpreter's included, so params, checkpoints and their
// checks are the runtime's.
class Step {
public:
  Step(const Graph &graph, const std::string &backend, bool fusion, int threads,
       bool checkNumerics, bool profile, const std::string &memoryBudget)
      : backend_(backend) {
    const Backend &chosen = findBackend(backend, "compile");
    CompileOptions options;
    options.fusion = fusion;
    options.memoryBudget = cli::memoryBudgetOption(memoryBudget);
    if (!chosen.compiled() && options.memoryBudget.given())
      throw Error("compile: memory_budget needs a compiled backend (cpu or cuda)");
    RunOptions run;
    run.threads = threads;
    run.checkNumerics = checkNumerics;
    run.profile = profile;
    exe_ = makeExecutable(chosen, graph, options, run);
  }

  nb::dict call(const std::map<std::string, InArray> &arrays) {
    TensorMap inputs = toTensorMap(arrays);
    TensorMap outputs;
    {
      nb::gil_scoped_release release;
      for (auto &[name, value] : exe_->step(inputs))
        outputs.emplace(name, std::move(value));
    }
    return toDict(std::move(outputs));
  }

  std::vector<std::string> paramNames() const { return exe_->paramNames(); }
  nb::object param(const std::string &name) const { return toNumpy(exe_->param(name)); }
  void setParam(const std::string &name, const InArray &array) {
    exe_->setParam(name, toTensor(name, array));
  }
  void save(const std::string &path) const { exe_->saveParams(path); }
  void load(const std::string &path) { exe_->loadParams(path); }
  int64_t stepsTaken() const { return exe_->stepsTaken(); }

  std::vector<std::string> kernels() const {
    std::vector<std::string> names;
    for (const KernelSpec &k : exe_->spec().kernels)
      names.push_back(k.name);
    return names;
  }

  // Median-free raw timings: (kernel, step, micros) per kernel per step.
  std::vector<std::tuple<std::string, int64_t, double>> profile() const {
    std::vector<std::tuple<std::string, int64_t, double>> rows;
    for (const KernelTiming &t : exe_->profile())
      rows.emplace_back(t.kernel, t.step, t.durationMicros);
    return rows;
  }

  const std::string &backend() const { return backend_; }

private:
  std::string backend_;
  std::unique_ptr<Executable> exe_;
};

void bindStep(nb::module_ &m) {
  nb::class_<Step>(m, "Step")
      .def(nb::init<const Graph &, const std::string &, bool, int, bool, bool,
                    const std::string &>(),
           "graph"_a, "backend"_a, "fusion"_a, "threads"_a, "check_numerics"_a, "profile"_a,
           "memory_budget"_a)
      .def("__call__", &Step::call, "inputs"_a)
      .def("param_names", &Step::paramNames)
      .def("param", &Step::param, "name"_a)
      .def("set_param", &Step::setParam, "name"_a, "value"_a)
      .def("save", &Step::save, "path"_a)
      .def("load", &Step::load, "path"_a)
      .def_prop_ro("steps_taken", &Step::stepsTaken)
      .def_prop_ro("kernels", &Step::kernels)
      .def_prop_ro("backend", &Step::backend)
      .def("profile", &Step::profile);

  m.def("bfloat16_array", &bfloat16Array, "bits"_a);
  m.def("bfloat16_bits", &bfloat16Bits, "array"_a);
  m.def("cuda_unavailable_reason", &cudaUnavailableReason);
  m.def("backends", [] {
    std::vector<std::string> names;
    for (const Backend &backend : allBackends())
      names.emplace_back(backend.name);
    return names;
  });
  m.def("optimizers", [] {
    std::vector<std::string_view> names = optimizerNames();
    return std::vector<std::string>(names.begin(), names.end());
  });
  m.def("schedules", [] {
    std::vector<std::string_view> names = scheduleNames();
    return std::vector<std::string>(names.begin(), names.end());
  });

  // `stepc bench` itself, pointed at a file of the graph's text; its JSON
  // report comes back as a string for the Python layer to parse.
  m.def("bench", [](const std::string &file, const std::string &json, int steps, int warmup,
                    int threads, bool compareUnfused, bool perKernel) {
    cli::BenchOptions options;
    options.file = file;
    options.json = json;
    options.steps = steps;
    options.warmup = warmup;
    options.threads = threads;
    options.compareUnfused = compareUnfused;
    options.perKernel = perKernel;
    nb::gil_scoped_release release;
    cli::bench(options);
  });
}

} // namespace
} // namespace stepc::python

NB_MODULE(_stepc, m) {
  using namespace stepc::python;
  m.doc() = "stepc's C++ API (use the `stepc` package, not this module)";
  nb::register_exception_translator(translateErrors);
  m.def("_set_error_class", [](nb::object cls) { errorClass() = std::move(cls); });
  bindBuilder(m);
  bindGraph(m);
  bindStep(m);
}
