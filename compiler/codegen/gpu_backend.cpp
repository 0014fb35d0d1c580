#include "gpu_backend.h"

#include "stepc/error.h"

#include "mlir/Conversion/ArithToLLVM/ArithToLLVM.h"
#include "mlir/Conversion/ControlFlowToLLVM/ControlFlowToLLVM.h"
#include "mlir/Conversion/FuncToLLVM/ConvertFuncToLLVM.h"
#include "mlir/Conversion/GPUToNVVM/GPUToNVVMPass.h"
#include "mlir/Conversion/MathToLLVM/MathToLLVM.h"
#include "mlir/Conversion/MemRefToLLVM/MemRefToLLVM.h"
#include "mlir/Conversion/NVVMToLLVM/NVVMToLLVM.h"
#include "mlir/Conversion/ReconcileUnrealizedCasts/ReconcileUnrealizedCasts.h"
#include "mlir/Conversion/SCFToControlFlow/SCFToControlFlow.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/ControlFlow/IR/ControlFlow.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/GPU/Transforms/Passes.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/MemRef/Transforms/Passes.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Target/LLVM/NVVM/Target.h"
#include "mlir/Target/LLVMIR/Dialect/Builtin/BuiltinToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/GPU/GPUToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/LLVMIR/LLVMToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/NVVM/NVVMToLLVMIRTranslation.h"
#include "mlir/Transforms/Passes.h"

#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/raw_ostream.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>

namespace stepc::codegen {
namespace {

// PTX ISA 8.0 (CUDA 12.0 drivers and later) covers every chip below and is
// the newest that LLVM 19 emits for all of them.
constexpr const char *kPtxFeatures = "+ptx80";

std::unique_ptr<mlir::MLIRContext> makeGpuContext() {
  mlir::DialectRegistry registry;
  registry.insert<mlir::arith::ArithDialect, mlir::cf::ControlFlowDialect, mlir::func::FuncDialect,
                  mlir::gpu::GPUDialect, mlir::LLVM::LLVMDialect, mlir::math::MathDialect,
                  mlir::memref::MemRefDialect, mlir::NVVM::NVVMDialect, mlir::scf::SCFDialect>();
  // convert-gpu-to-nvvm lowers the other dialects through their
  // ConvertToLLVM interfaces; the NVVM target serializes to PTX.
  mlir::arith::registerConvertArithToLLVMInterface(registry);
  mlir::cf::registerConvertControlFlowToLLVMInterface(registry);
  mlir::registerConvertFuncToLLVMInterface(registry);
  mlir::registerConvertMathToLLVMInterface(registry);
  mlir::registerConvertMemRefToLLVMInterface(registry);
  mlir::registerConvertNVVMToLLVMInterface(registry);
  mlir::NVVM::registerNVVMTargetInterfaceExternalModels(registry);
  mlir::registerBuiltinDialectTranslation(registry);
  mlir::registerGPUDialectTranslation(registry);
  mlir::registerLLVMDialectTranslation(registry);
  mlir::registerNVVMDialectTranslation(registry);
  auto context = std::make_unique<mlir::MLIRContext>(registry);
  context->loadAllAvailableDialects();
  return context;
}

// Diagnostics go into the exception: a failure here is a bug in the kernel
// emitter (or a toolkit problem), and the message is what it takes to fix it.
class Diagnostics {
public:
  explicit Diagnostics(mlir::MLIRContext &context)
      : os_(text_), handler_(sourceMgr_, &context, os_) {}
  std::string str() { return os_.str(); }

private:
  std::string text_;
  llvm::raw_string_ostream os_;
  llvm::SourceMgr sourceMgr_;
  mlir::SourceMgrDiagnosticHandler handler_;
};

mlir::OwningOpRef<mlir::ModuleOp> parse(mlir::MLIRContext &context, const std::string &text) {
  Diagnostics diagnostics(context);
  auto module = mlir::parseSourceString<mlir::ModuleOp>(text, &context);
  if (!module)
    throw std::logic_error("GPU codegen produced invalid MLIR: " + diagnostics.str());
  return module;
}

void run(mlir::ModuleOp module, mlir::PassManager &pm, const char *what) {
  Diagnostics diagnostics(*module.getContext());
  if (mlir::failed(pm.run(module)))
    throw std::logic_error(fmt::format("MLIR {} failed: {}", what, diagnostics.str()));
}

// gpu.func -> llvm.func with NVVM intrinsics. Math ops with a libdevice
// function become calls to it (__nv_expf, ...); convert-math-to-llvm takes
// the rest (fma, roundeven, absi) to LLVM intrinsics NVPTX has.
void lowerToNvvm(mlir::ModuleOp module) {
  mlir::PassManager pm(module.getContext());
  pm.addPass(mlir::createCanonicalizerPass());
  pm.addPass(mlir::createCSEPass());
  mlir::OpPassManager &kernels = pm.nest<mlir::gpu::GPUModuleOp>();
  kernels.addPass(mlir::createConvertSCFToCFPass());
  kernels.addPass(mlir::createConvertGpuOpsToNVVMOps());
  kernels.addPass(mlir::createConvertMathToLLVMPass());
  kernels.addPass(mlir::createReconcileUnrealizedCastsPass());
  run(module, pm, "lowering to NVVM");
}

std::string print(mlir::ModuleOp module) {
  std::string text;
  llvm::raw_string_ostream os(text);
  module->print(os);
  return os.str();
}

bool hasLibdevice(const std::string &toolkit) {
  std::error_code error;
  return !toolkit.empty() &&
         std::filesystem::exists(
             std::filesystem::path(toolkit) / "nvvm" / "libdevice" / "libdevice.10.bc", error);
}

} // namespace

const std::vector<std::string> &supportedGpuArchs() {
  static const std::vector<std::string> archs = {"sm_90", "sm_90a", "sm_89", "sm_87",
                                                 "sm_86", "sm_80",  "sm_75", "sm_70"};
  return archs;
}

void checkGpuArch(const std::string &arch) {
  const auto &archs = supportedGpuArchs();
  if (std::find(archs.begin(), archs.end(), arch) == archs.end())
    throw Error(fmt::format("unknown GPU architecture '{}'; expected one of: {}", arch,
                            fmt::join(archs, ", ")));
}

std::string cudaToolkitPath() {
  for (const char *variable : {"CUDA_HOME", "CUDA_PATH"})
    if (const char *value = std::getenv(variable); value && hasLibdevice(value))
      return value;
  return hasLibdevice("/usr/local/cuda") ? "/usr/local/cuda" : "";
}

std::string lowerGpuToStage(const std::string &mlirModule, GpuStage stage,
                            const std::string &arch) {
  if (stage == GpuStage::Ptx)
    return compileToPtx(mlirModule, {arch}).front();
  auto context = makeGpuContext();
  auto module = parse(*context, mlirModule);
  if (stage == GpuStage::Nvvm)
    lowerToNvvm(*module);
  return print(*module);
}

std::vector<std::string> compileToPtx(const std::string &mlirModule,
                                      const std::vector<std::string> &archs) {
  for (const std::string &arch : archs)
    checkGpuArch(arch);
  auto context = makeGpuContext();
  auto module = parse(*context, mlirModule);
  lowerToNvvm(*module);

  mlir::PassManager pm(context.get());
  // One target per chip: the module is lowered once and serialized per chip.
  for (const std::string &arch : archs) {
    mlir::GpuNVVMAttachTargetOptions target;
    target.chip = arch;
    target.features = kPtxFeatures;
    pm.addPass(mlir::createGpuNVVMAttachTarget(target));
  }
  mlir::GpuModuleToBinaryPassOptions binary;
  binary.compilationTarget = "isa";
  std::string toolkit = cudaToolkitPath();
  binary.toolkitPath = toolkit;
  pm.addPass(mlir::createGpuModuleToBinaryPass(binary));
  run(*module, pm, "serialization to PTX");

  std::vector<std::string> ptx(archs.size());
  module->walk([&](mlir::gpu::BinaryOp op) {
    for (mlir::Attribute attr : op.getObjects()) {
      auto object = mlir::cast<mlir::gpu::ObjectAttr>(attr);
      auto target = mlir::cast<mlir::NVVM::NVVMTargetAttr>(object.getTarget());
      auto at = std::find(archs.begin(), archs.end(), target.getChip().str());
      if (at != archs.end())
        ptx[at - archs.begin()] = object.getObject().getValue().str();
    }
  });
  for (size_t i = 0; i < archs.size(); ++i) {
    std::string &text = ptx[i];
    if (text.empty())
      throw std::logic_error(fmt::format("gpu-module-to-binary produced no PTX for {}", archs[i]));
    // The object string ends in a NUL: keep the text only.
    while (!text.empty() && text.back() == '\0')
      text.pop_back();
    // A call libdevice should have resolved is left as an extern function.
    size_t at = text.find(".extern .func");
    if (at != std::string::npos) {
      size_t name = text.find("__nv_", at);
      size_t end = text.find_first_of("( \n", name);
      throw Error(fmt::format(
          "PTX for {} calls libdevice's {}, but libdevice was not linked: no "
          "nvvm/libdevice/libdevice.10.bc under $CUDA_HOME, $CUDA_PATH or /usr/local/cuda{}",
          archs[i], name == std::string::npos ? "functions" : text.substr(name, end - name),
          toolkit.empty() ? "" : fmt::format(" (used {})", toolkit)));
    }
  }
  return ptx;
}

} // namespace stepc::codegen
