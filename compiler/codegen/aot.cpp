// `stepc compile --target cpu -o DIR`: the kernels as an object file, a C
// header, and the C++ that runs them on libstepc_runtime (no LLVM or MLIR).
#include "aot.h"

#include "gpu_lowering.h"
#include "jit_cache.h"
#include "llvm_backend.h"
#include "lowered_graph.h"
#include "mlir_text.h"

#include "stepc/compile.h"
#include "stepc/file.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <set>

namespace stepc::codegen {
namespace {

std::string_view cType(DType dtype) {
  switch (dtype) {
  case DType::F32:
    return "float";
  case DType::F64:
    return "double";
  case DType::I32:
    return "int32_t";
  case DType::I64:
    return "int64_t";
  case DType::I8:
    return "int8_t";
  case DType::U8:
    return "uint8_t";
  case DType::I16:
    return "int16_t";
  case DType::U16:
    return "uint16_t";
  case DType::U32:
    return "uint32_t";
  case DType::U64:
    return "uint64_t";
  case DType::Bool:
    return "uint8_t";
  case DType::F16:
  case DType::BF16:
    return "uint16_t"; // the bit patterns (stepc/half.h converts them)
  }
  return "void";
}

bool isReservedWord(std::string_view word) {
  static const std::set<std::string_view> words = {
      "auto",     "break",   "case",     "char",      "const",    "continue", "default",
      "do",       "double",  "else",     "enum",      "extern",   "float",    "for",
      "goto",     "if",      "inline",   "int",       "long",     "register", "restrict",
      "return",   "short",   "signed",   "sizeof",    "static",   "struct",   "switch",
      "typedef",  "union",   "unsigned", "void",      "volatile", "while",    "bool",
      "class",    "delete",  "new",      "this",      "template", "true",     "false",
      "operator", "private", "public",   "namespace", "using",    "virtual",  "NULL"};
  return words.count(word) > 0;
}

std::string upper(std::string text) {
  for (char &c : text)
    c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return text;
}

// The name of the stepc::DType enumerator: the dtype's name in capitals
// (F32, BF16, U8, ...), but Bool.
std::string dtypeEnum(DType dtype) {
  return dtype == DType::Bool ? "Bool" : upper(std::string(dtypeName(dtype)));
}

// A C++ string literal; octal escapes, since \x would swallow hex digits
// that follow it.
std::string cppString(std::string_view text) {
  std::string out = "\"";
  for (char c : text) {
    auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\')
      out += fmt::format("\\{}", c);
    else if (u < 0x20 || u >= 0x7f)
      out += fmt::format("\\{:03o}", u);
    else
      out += c;
  }
  return out + "\"";
}

// Text for a C comment.
std::string commentSafe(std::string text) {
  for (size_t at; (at = text.find("*/")) != std::string::npos;)
    text.replace(at, 2, "* /");
  return text;
}

std::string shapeList(const Shape &shape) {
  std::string out;
  for (int64_t d : shape)
    out += fmt::format("{}{}", out.empty() ? "" : ", ", d);
  return "{" + out + "}";
}

std::string slotInit(const TensorSlot &slot) {
  return fmt::format("{{{}, {{DType::{}, {}}}, {}}}", cppString(slot.name),
                     dtypeEnum(slot.type.dtype), shapeList(slot.type.shape), slot.offset);
}

std::string slotList(const std::vector<TensorSlot> &slots, std::string_view indent) {
  std::string out;
  for (const TensorSlot &slot : slots)
    out += fmt::format("{}{},\n", indent, slotInit(slot));
  return out;
}

// The parameter names of stepc_<name>_step: inputs, then outputs, each a C
// identifier distinct from the others and from the handle's "model".
struct StepArgs {
  std::vector<std::string> inputs, outputs;
};
StepArgs stepArgs(const ExecutableSpec &spec) {
  std::set<std::string> used = {"model"};
  auto unique = [&](const std::string &name) {
    std::string id = cIdentifier(name);
    if (isReservedWord(id))
      id += "_";
    std::string candidate = id;
    for (int i = 2; used.count(candidate); ++i)
      candidate = fmt::format("{}_{}", id, i);
    used.insert(candidate);
    return candidate;
  };
  StepArgs args;
  for (const TensorSlot &slot : spec.inputs)
    args.inputs.push_back(unique(slot.name));
  for (const TensorSlot &slot : spec.outputs)
    args.outputs.push_back(unique(slot.name));
  return args;
}

std::string kernelSymbol(const std::string &name, const KernelSpec &kernel) {
  return fmt::format("_mlir_ciface_stepc_{}_{}", name, kernel.name);
}

std::string slotDoc(const TensorSlot &slot) {
  int64_t n = slot.type.numel();
  return fmt::format("{} {} ({} element{})", commentSafe(slot.name), typeString(slot.type), n,
                     n == 1 ? "" : "s");
}

// makeCudaSpec(): the launches, and the PTX that the object carries after
// the params.
std::string cudaSpecSource(const AotCudaCode &cuda, const std::string &p) {
  std::string launches;
  for (const std::vector<CudaLaunch> &kernel : cuda.launches) {
    std::string list;
    for (const CudaLaunch &launch : kernel)
      list += fmt::format("{{{}, {}}}, ", cppString(launch.function), launch.extent);
    launches += fmt::format("      {{{}}},\n", list);
  }
  return fmt::format(R"(
// The GPU code: each kernel's launches (one per loop nest) and the PTX.
stepc::CudaExecutableSpec makeCudaSpec() {{
  stepc::CudaExecutableSpec cuda;
  cuda.layout = makeSpec();
  cuda.launches = {{
{launches}  }};
  cuda.ptx.assign(reinterpret_cast<const char *>({p}_initial_params) + {offset}, {bytes});
  cuda.arch = {arch};
  return cuda;
}}
)",
                     fmt::arg("launches", launches), fmt::arg("p", p),
                     fmt::arg("offset", cuda.ptxOffset), fmt::arg("bytes", cuda.ptxBytes),
                     fmt::arg("arch", cppString(cuda.arch)));
}

} // namespace

std::string cIdentifier(std::string_view name) {
  std::string id;
  for (char c : name)
    id += (std::isalnum(static_cast<unsigned char>(c)) || c == '_') ? c : '_';
  if (id.empty())
    return "model";
  if (std::isdigit(static_cast<unsigned char>(id[0])))
    id = "_" + id;
  return id;
}

ParamBlob packInitialParams(const ExecutableSpec &spec) {
  ParamBlob blob;
  for (const TensorSlot &slot : spec.params) {
    blob.bytes.resize((blob.bytes.size() + 63) / 64 * 64, '\0');
    blob.offsets.push_back(static_cast<int64_t>(blob.bytes.size()));
    const Tensor &value = spec.initialParams.at(slot.name);
    blob.bytes.append(reinterpret_cast<const char *>(value.bytes()), value.nbytes());
  }
  return blob;
}

std::string aotHeader(const ExecutableSpec &spec, const std::string &name, bool cuda) {
  std::string guard = upper(fmt::format("STEPC_{}_H", name));
  std::string macro = upper(fmt::format("STEPC_{}", name));
  StepArgs args = stepArgs(spec);

  std::string slots;
  auto listSlots = [&](std::string_view title, const std::vector<TensorSlot> &list) {
    slots += fmt::format(" * {}:{}\n", title, list.empty() ? " none" : "");
    for (const TensorSlot &slot : list)
      slots += fmt::format(" *   {}\n", slotDoc(slot));
  };
  listSlots("Inputs", spec.inputs);
  listSlots("Outputs", spec.outputs);
  listSlots("Params (state kept between steps)", spec.params);

  std::string sizes;
  auto sizeMacros = [&](std::string_view role, const std::vector<TensorSlot> &list) {
    std::set<std::string> seen;
    for (const TensorSlot &slot : list) {
      std::string id = upper(cIdentifier(slot.name));
      if (!seen.insert(id).second)
        continue; // two names that read the same in C: the comment above lists both
      sizes += fmt::format("#define {}_{}_{}_NUMEL {} /* {} */\n", macro, role, id,
                           slot.type.numel(), typeString(slot.type));
    }
  };
  sizeMacros("INPUT", spec.inputs);
  sizeMacros("OUTPUT", spec.outputs);
  sizeMacros("PARAM", spec.params);

  std::string params, paramDocs;
  for (size_t i = 0; i < spec.inputs.size(); ++i) {
    params += fmt::format(",\n    const {} *{}", cType(spec.inputs[i].type.dtype), args.inputs[i]);
    paramDocs += fmt::format(" *   {}: input {}\n", args.inputs[i], slotDoc(spec.inputs[i]));
  }
  for (size_t i = 0; i < spec.outputs.size(); ++i) {
    params += fmt::format(",\n    {} *{}", cType(spec.outputs[i].type.dtype), args.outputs[i]);
    paramDocs += fmt::format(" *   {}: output {}, or NULL to skip it\n", args.outputs[i],
                             slotDoc(spec.outputs[i]));
  }
  std::string updates = spec.params.empty()
                            ? ""
                            : " * Params that the graph updates (a training step) take their new "
                              "values in place.\n";

  return fmt::format(
      R"(/* {n}.h: the C API of the stepc graph '{graph}', compiled ahead of time.
 * Generated by `stepc compile`; do not edit.
 *
 * Build: compile {n}_spec.cpp as C++20 with -I <stepc>/include -I <this
 * directory>, and link it with {n}.o, libstepc_runtime.a, libfmt, -pthread
 * and -lm{build}. No LLVM or MLIR library is needed.
 *
 * Tensors are dense, row-major, of the element type in the signature (bool
 * is one uint8_t 0/1 per element).
{slots} *
 * Functions returning int return 0 on success and -1 on error; then
 * {p}_last_error says what went wrong. A handle is used by one thread at a
 * time; the kernels themselves run {runsOn}.
 */
#ifndef {guard}
#define {guard}

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {{
#endif

{sizes}
typedef struct {p} {p};

#ifndef STEPC_COMMUNICATOR_DEFINED
#define STEPC_COMMUNICATOR_DEFINED
/* The processes of a data-parallel job (a graph built with `stepc
 * train-step --data-parallel`), as callbacks over the program's own MPI,
 * NCCL or other engine: {p}_create_distributed takes one. Every callback
 * gets `context` first, blocks until its collective is done, and returns 0
 * on success (anything else fails the call that needed it).
 *   all_reduce: out[i] = sum (op STEPC_SUM) or mean (STEPC_MEAN) over the
 *     ranks of in[i], `count` elements of type `dtype` (STEPC_F32, ...);
 *     in == out reduces in place. The step calls it once per gradient
 *     bucket and once for the loss.
 *   broadcast: copies `bytes` at `data` on rank `root` to every rank.
 *   all_gather: out (size * bytes) = every rank's `bytes` at `in`, by rank.
 * Shared by every stepc artifact's header. */
typedef struct stepc_communicator {{
  void *context;
  int rank;
  int size;
  int (*all_reduce)(void *context, const void *in, void *out, int64_t count, int dtype, int op);
  int (*broadcast)(void *context, void *data, int64_t bytes, int root);
  int (*all_gather)(void *context, const void *in, void *out, int64_t bytes);
}} stepc_communicator;
#define STEPC_F32 0
#define STEPC_F64 1
#define STEPC_I32 2
#define STEPC_I64 3
#define STEPC_SUM 0
#define STEPC_MEAN 1
#endif

/* Creates the state: {state} and the
 * params. params_path: a safetensors file holding every param (as written by
 * {p}_save_params; {n}.params.safetensors next to this header holds
 * the initial values); NULL: the initial values embedded in {n}.o.
 * Returns NULL on error: {p}_last_error(NULL) says why. */
{p} *{p}_create(const char *params_path);

/* The same, as rank communicator->rank of a data-parallel job of
 * communicator->size processes (the struct is copied; `context` must stay
 * valid until {p}_destroy). Collective: every rank calls it. It checks
 * that every rank compiled the same graph (a mismatch fails on every rank,
 * naming the ranks that differ) and then copies rank 0's params to all;
 * params_path, if given, is loaded by every rank afterwards. Each step then
 * averages the gradients through all_reduce, and the loss it returns is the
 * mean over the ranks; {p}_save_params writes on rank 0 only. */
{p} *{p}_create_distributed(const char *params_path,
    const stepc_communicator *communicator);

/* Runs one step.
{paramDocs}{updates} * On error nothing is written and no param changes. */
int {p}_step({p} *model{params});

/* Copies param `name` to `out` / from `value`; `bytes` must be its exact
 * size (the _NUMEL macro times the element size). */
int {p}_get_param(const {p} *model, const char *name, void *out, size_t bytes);
int {p}_set_param({p} *model, const char *name, const void *value, size_t bytes);

/* Checkpoints of every param, in the safetensors format; a save is atomic,
 * a load checks every name, dtype and shape and changes nothing on error. */
int {p}_save_params(const {p} *model, const char *path);
int {p}_load_params({p} *model, const char *path);

/* The message of this handle's last failed call (with NULL: of this
 * thread's last failed {p}_create), or "". */
const char *{p}_last_error(const {p} *model);

void {p}_destroy({p} *model);

#ifdef __cplusplus
}}
#endif

#endif /* {guard} */
)",
      fmt::arg("n", name), fmt::arg("graph", commentSafe(spec.name)), fmt::arg("slots", slots),
      fmt::arg("guard", guard), fmt::arg("sizes", sizes), fmt::arg("p", "stepc_" + name),
      fmt::arg("paramDocs", paramDocs), fmt::arg("updates", updates), fmt::arg("params", params),
      fmt::arg("build", cuda ? ", -ldl (the CUDA driver is opened at run time; the PTX in the\n"
                               " * object is compiled for the GPU by the driver)"
                             : ""),
      fmt::arg("runsOn", cuda ? "on the first CUDA GPU, on the handle's own stream"
                              : "on the handle's own thread pool"),
      fmt::arg("state", cuda ? "the device arena (on the first CUDA GPU; without one\n"
                               " * this fails with \"no CUDA device: ...\"), a stream"
                             : "the arena, a thread pool (one thread per core)"));
}

std::string aotSpecSource(const ExecutableSpec &spec, const std::string &name,
                          const ParamBlob &blob, const AotCudaCode *cuda) {
  std::string p = "stepc_" + name;
  StepArgs args = stepArgs(spec);

  std::string declarations;
  if (!cuda)
    for (const KernelSpec &kernel : spec.kernels)
      if (!kernel.collective)
        declarations += fmt::format("void {}(stepc::ArenaDescriptor *, int64_t, int64_t);\n",
                                  kernelSymbol(name, kernel));

  std::string copies;
  for (const auto &copy : spec.updateCopies)
    copies += fmt::format("      {{{}, {}, {}}},\n", copy.from, copy.to, copy.bytes);

  std::string kernels;
  for (size_t i = 0; i < spec.kernels.size(); ++i) {
    const KernelSpec &kernel = spec.kernels[i];
    std::string provenance;
    for (const std::string &line : kernel.provenance)
      provenance += fmt::format("        {},\n", cppString(line));
    std::string code;
    if (kernel.collective)
      code = fmt::format("    k.collective = KernelSpec::Collective{{ReduceOp::{}, {}}};\n",
                         kernel.collective->op == ReduceOp::Sum ? "Sum" : "Mean",
                         slotInit(kernel.collective->from));
    else if (!cuda)
      code = fmt::format("    k.fn = &{};\n    k.parallelExtent = {};\n",
                         kernelSymbol(name, kernel), kernel.parallelExtent);
    for (size_t w : kernel.waitFor)
      code += fmt::format("    k.waitFor.push_back({});\n", w);
    kernels += fmt::format(R"(  {{
    KernelSpec &k = spec.kernels[{i}];
    k.name = {name};
{code}    k.outputs = {{
{outputs}    }};
    k.provenance = {{
{provenance}    }};
  }}
)",
                           fmt::arg("i", i), fmt::arg("name", cppString(kernel.name)),
                           fmt::arg("code", code),
                           fmt::arg("outputs", slotList(kernel.outputs, "        ")),
                           fmt::arg("provenance", provenance));
  }

  std::string checks;
  for (const IndexCheck &c : spec.indexChecks)
    checks += fmt::format("      {{{}, {}, {}, {}, {}, {}}},\n", cppString(c.kernel),
                          cppString(c.op), cppString(c.location), cppString(c.indices),
                          cppString(c.range), c.bound);

  std::string offsets;
  for (int64_t offset : blob.offsets)
    offsets += fmt::format("{}, ", offset);

  std::string params, setInputs, getOutputs;
  for (size_t i = 0; i < spec.inputs.size(); ++i) {
    params += fmt::format(", const {} *{}", cType(spec.inputs[i].type.dtype), args.inputs[i]);
    setInputs += fmt::format("    setInput(*model, {}, {});\n", cppString(spec.inputs[i].name),
                             args.inputs[i]);
  }
  for (size_t i = 0; i < spec.outputs.size(); ++i) {
    params += fmt::format(", {} *{}", cType(spec.outputs[i].type.dtype), args.outputs[i]);
    getOutputs += fmt::format("    getOutput(outputs, {}, {});\n", cppString(spec.outputs[i].name),
                              args.outputs[i]);
  }

  return fmt::format(
      R"(// {n}_spec.cpp: the ExecutableSpec of the kernels in {n}.o, and the C API
// of {n}.h on libstepc_runtime. Generated by `stepc compile`; do not edit.
#include "{n}.h"

#include "stepc/error.h"
#include "stepc/executable.h"
{cudaInclude}
#include <cstring>
#include <exception>
#include <map>
#include <memory>
#include <string>

extern "C" {{
{declarations}// The initial params, packed at the offsets in makeSpec().
extern const unsigned char {p}_initial_params[];
}}

namespace {{

using stepc::DType;
using stepc::KernelSpec;
using stepc::ReduceOp;

stepc::ExecutableSpec makeSpec() {{
  stepc::ExecutableSpec spec;
  spec.name = {graph};
  spec.arenaBytes = {arena};
  spec.inputs = {{
{inputs}  }};
  spec.params = {{
{paramSlots}  }};
  spec.outputs = {{
{outputs}  }};
  spec.updateCopies = {{
{copies}  }};
  spec.kernels.resize({kernelCount});
{kernels}  spec.faultOffset = {faultOffset};
  spec.indexChecks = {{
{checks}  }};
  static const size_t offsets[] = {{{offsets}0}};
  for (size_t i = 0; i < spec.params.size(); ++i) {{
    stepc::Tensor value(spec.params[i].type);
    if (value.nbytes() > 0)
      std::memcpy(value.bytes(), {p}_initial_params + offsets[i], value.nbytes());
    spec.initialParams.emplace(spec.params[i].name, std::move(value));
  }}
  return spec;
}}
{cudaSpec}
thread_local std::string createError;

}} // namespace

struct {p} {{
  {p}({specType} spec, stepc::RunOptions options)
      : executable(std::move(spec), std::move(options)) {{
    for (const stepc::TensorSlot &slot : executable.spec().inputs)
      inputs.emplace(slot.name, stepc::Tensor(slot.type));
  }}
  {executableType} executable;
  std::map<std::string, stepc::Tensor, std::less<>> inputs; // reused by every step
  mutable std::string error;
}};

namespace {{

template <class F> int guarded(const {p} *model, const char *function, F &&body) {{
  if (!model) {{
    createError = std::string(function) + ": the handle is NULL";
    return -1;
  }}
  try {{
    body();
    model->error.clear();
    return 0;
  }} catch (const std::exception &e) {{
    model->error = std::string(function) + ": " + e.what();
    return -1;
  }}
}}

void setInput({p} &model, const char *name, const void *data) {{
  stepc::Tensor &tensor = model.inputs.find(name)->second;
  if (!data)
    throw stepc::Error(std::string("input '") + name + "' (" + stepc::typeString(tensor.type()) +
                       ") is NULL");
  if (tensor.nbytes() > 0)
    std::memcpy(tensor.bytes(), data, tensor.nbytes());
}}

void getOutput(const std::map<std::string, stepc::Tensor> &outputs, const char *name, void *out) {{
  const stepc::Tensor &tensor = outputs.at(name);
  if (out && tensor.nbytes() > 0)
    std::memcpy(out, tensor.bytes(), tensor.nbytes());
}}

void checkBytes(const char *name, const stepc::Tensor &value, size_t bytes) {{
  if (bytes != value.nbytes())
    throw stepc::Error(std::string("param '") + name + "' is " +
                       stepc::typeString(value.type()) + ", " +
                       std::to_string(value.nbytes()) + " bytes; the buffer has " +
                       std::to_string(bytes));
}}

}} // namespace

extern "C" {{

}} // extern "C"

namespace {{

{p} *create(const char *function, const char *params_path,
                   const stepc_communicator *communicator) {{
  try {{
    stepc::RunOptions options;
    if (communicator) {{
      stepc::CommunicatorCallbacks callbacks;
      callbacks.context = communicator->context;
      callbacks.rank = communicator->rank;
      callbacks.size = communicator->size;
      callbacks.allReduce = communicator->all_reduce;
      callbacks.broadcast = communicator->broadcast;
      callbacks.allGather = communicator->all_gather;
      options.communicator = stepc::callbackCommunicator(callbacks);
    }}
    auto model = std::make_unique<{p}>({makeSpec}(), std::move(options));
    if (params_path)
      model->executable.loadParams(params_path);
    createError.clear();
    return model.release();
  }} catch (const std::exception &e) {{
    createError = std::string(function) + ": " + e.what();
    return nullptr;
  }}
}}

}} // namespace

extern "C" {{

{p} *{p}_create(const char *params_path) {{
  return create("{p}_create", params_path, nullptr);
}}

{p} *{p}_create_distributed(const char *params_path,
    const stepc_communicator *communicator) {{
  if (!communicator) {{
    createError = "{p}_create_distributed: the communicator is NULL";
    return nullptr;
  }}
  return create("{p}_create_distributed", params_path, communicator);
}}

int {p}_step({p} *model{params}) {{
  return guarded(model, "{p}_step", [&] {{
{setInputs}    std::map<std::string, stepc::Tensor> outputs = model->executable.step(model->inputs);
{getOutputs}  }});
}}

int {p}_get_param(const {p} *model, const char *name, void *out, size_t bytes) {{
  return guarded(model, "{p}_get_param", [&] {{
    if (!name || !out)
      throw stepc::Error("name and out must not be NULL");
    stepc::Tensor value = model->executable.param(name);
    checkBytes(name, value, bytes);
    std::memcpy(out, value.bytes(), bytes);
  }});
}}

int {p}_set_param({p} *model, const char *name, const void *value, size_t bytes) {{
  return guarded(model, "{p}_set_param", [&] {{
    if (!name || !value)
      throw stepc::Error("name and value must not be NULL");
    stepc::Tensor tensor = model->executable.param(name);
    checkBytes(name, tensor, bytes);
    std::memcpy(tensor.bytes(), value, bytes);
    model->executable.setParam(name, tensor);
  }});
}}

int {p}_save_params(const {p} *model, const char *path) {{
  return guarded(model, "{p}_save_params", [&] {{
    if (!path)
      throw stepc::Error("the path is NULL");
    model->executable.saveParams(path);
  }});
}}

int {p}_load_params({p} *model, const char *path) {{
  return guarded(model, "{p}_load_params", [&] {{
    if (!path)
      throw stepc::Error("the path is NULL");
    model->executable.loadParams(path);
  }});
}}

const char *{p}_last_error(const {p} *model) {{
  return model ? model->error.c_str() : createError.c_str();
}}

void {p}_destroy({p} *model) {{ delete model; }}

}} // extern "C"
)",
      fmt::arg("n", name), fmt::arg("p", p), fmt::arg("declarations", declarations),
      fmt::arg("graph", cppString(spec.name)), fmt::arg("arena", spec.arenaBytes),
      fmt::arg("inputs", slotList(spec.inputs, "      ")),
      fmt::arg("paramSlots", slotList(spec.params, "      ")),
      fmt::arg("outputs", slotList(spec.outputs, "      ")), fmt::arg("copies", copies),
      fmt::arg("kernelCount", spec.kernels.size()), fmt::arg("kernels", kernels),
      fmt::arg("faultOffset", spec.faultOffset), fmt::arg("checks", checks),
      fmt::arg("offsets", offsets), fmt::arg("params", params), fmt::arg("setInputs", setInputs),
      fmt::arg("getOutputs", getOutputs),
      fmt::arg("cudaInclude", cuda ? "#include \"stepc/cuda.h\"\n" : ""),
      fmt::arg("cudaSpec", cuda ? cudaSpecSource(*cuda, p) : ""),
      fmt::arg("specType", cuda ? "stepc::CudaExecutableSpec" : "stepc::ExecutableSpec"),
      fmt::arg("executableType", cuda ? "stepc::CudaExecutable" : "stepc::CpuExecutable"),
      fmt::arg("makeSpec", cuda ? "makeCudaSpec" : "makeSpec"));
}

AotArtifact artifactFiles(const std::string &dir, const std::string &name) {
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error)
    throw Error(fmt::format("cannot create the output directory '{}': {}", dir, error.message()));
  AotArtifact artifact;
  artifact.name = name;
  auto path = [&](const std::string &file) { return (std::filesystem::path(dir) / file).string(); };
  artifact.object = path(name + ".o");
  artifact.header = path(name + ".h");
  artifact.source = path(name + "_spec.cpp");
  artifact.params = path(name + ".params.safetensors");
  return artifact;
}

} // namespace stepc::codegen

namespace stepc {

AotArtifact compileAot(const Graph &graph, const CompileOptions &options, const std::string &dir,
                       const std::string &requestedName) {
  if (options.target == Target::Cuda)
    return codegen::compileAotCuda(graph, options, dir, requestedName);
  std::string name = codegen::cIdentifier(requestedName.empty() ? graph.name : requestedName);
  LoweredGraph lowered = lowerGraph(graph, options);

  // Kernel names (k0_matmul, ...) repeat across graphs: prefix the symbols so
  // that two artifacts link into one program.
  std::string module = lowered.mlirModule;
  for (const KernelSpec &kernel : lowered.spec.kernels) {
    if (kernel.collective)
      continue; // a runtime call (the communicator's), no code in the module
    std::string from = fmt::format("func.func @{}(", kernel.name);
    size_t at = module.find(from);
    if (at == std::string::npos)
      throw std::logic_error(fmt::format("AOT: kernel {} is not in the module", kernel.name));
    module.replace(at, from.size(), fmt::format("func.func @stepc_{}_{}(", name, kernel.name));
  }
  // So are the shared kernel bodies (body_HASH, its constants body_HASH_cst0,
  // ...): the same layer in two graphs hashes alike.
  module = codegen::replaceAll(module, "@body_", fmt::format("@stepc_{}_body_", name));
  codegen::ParamBlob blob = codegen::packInitialParams(lowered.spec);
  std::string object =
      codegen::compileToObject(module, fmt::format("stepc_{}_initial_params", name), blob.bytes);

  AotArtifact artifact = codegen::artifactFiles(dir, name);
  writeFileAtomically(artifact.object, object);
  writeFileAtomically(artifact.header, codegen::aotHeader(lowered.spec, name));
  writeFileAtomically(artifact.source, codegen::aotSpecSource(lowered.spec, name, blob));
  writeSafetensors(artifact.params, lowered.spec.initialParams, {{"graph", lowered.spec.name}});
  return artifact;
}

} // namespace stepc
