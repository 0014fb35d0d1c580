#include "llvm_backend.h"

#include "stepc/error.h"

#include "mlir/Conversion/Passes.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Arith/Transforms/Passes.h"
#include "mlir/Dialect/ControlFlow/IR/ControlFlow.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/Math/Transforms/Passes.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/MemRef/Transforms/Passes.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Target/LLVMIR/Dialect/Builtin/BuiltinToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/LLVMIR/LLVMToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Export.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"
#include "mlir/Transforms/Passes.h"

#include "llvm/ExecutionEngine/Orc/ExecutionUtils.h"
#include "llvm/ExecutionEngine/Orc/JITTargetMachineBuilder.h"
#include "llvm/ExecutionEngine/Orc/LLJIT.h"
#include "llvm/IR/Constants.h"
#include "llvm/IR/GlobalVariable.h"
#include "llvm/IR/LLVMContext.h"
#include "llvm/IR/LegacyPassManager.h"
#include "llvm/IR/Module.h"
#include "llvm/MC/TargetRegistry.h"
#include "llvm/Passes/PassBuilder.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/Support/raw_ostream.h"
#include "llvm/Target/TargetMachine.h"
#include "llvm/TargetParser/Host.h"

#include <fmt/format.h>

#include <chrono>
#include <mutex>

namespace stepc::codegen {
namespace {

void initializeLlvm() {
  static std::once_flag once;
  std::call_once(once, [] {
    llvm::InitializeNativeTarget();
    llvm::InitializeNativeTargetAsmPrinter();
    llvm::InitializeNativeTargetAsmParser();
  });
}

std::unique_ptr<mlir::MLIRContext> makeContext() {
  mlir::DialectRegistry registry;
  registry.insert<mlir::arith::ArithDialect, mlir::cf::ControlFlowDialect,
                  mlir::func::FuncDialect, mlir::LLVM::LLVMDialect, mlir::math::MathDialect,
                  mlir::memref::MemRefDialect, mlir::scf::SCFDialect,
                  mlir::vector::VectorDialect>();
  mlir::registerBuiltinDialectTranslation(registry);
  mlir::registerLLVMDialectTranslation(registry);
  auto context =
      std::make_unique<mlir::MLIRContext>(registry, mlir::MLIRContext::Threading::DISABLED);
  context->loadAllAvailableDialects();
  return context;
}

// Parses the module; a parse error here is a bug in the kernel emitter, so
// the message carries MLIR's diagnostic.
mlir::OwningOpRef<mlir::ModuleOp> parse(mlir::MLIRContext &context, const std::string &text) {
  std::string diagnostics;
  llvm::raw_string_ostream os(diagnostics);
  llvm::SourceMgr sourceMgr;
  mlir::SourceMgrDiagnosticHandler handler(sourceMgr, &context, os);
  auto module = mlir::parseSourceString<mlir::ModuleOp>(text, &context);
  if (!module)
    throw std::logic_error("codegen produced invalid MLIR: " + os.str());
  return module;
}

void runPasses(mlir::ModuleOp module, mlir::PassManager &pm, const char *what) {
  std::string diagnostics;
  llvm::raw_string_ostream os(diagnostics);
  llvm::SourceMgr sourceMgr;
  mlir::SourceMgrDiagnosticHandler handler(sourceMgr, module.getContext(), os);
  if (mlir::failed(pm.run(module)))
    throw std::logic_error(fmt::format("MLIR {} failed: {}", what, os.str()));
}

// f32 exp/log/tanh/erf/sin/cos become polynomials: plain arithmetic that LLVM
// vectorizes, unlike calls into libm. bf16 <-> f32 conversions become integer
// shifts and adds (round to nearest-even): LLVM 19 lowers fptrunc to bfloat
// on x86 to a call of __truncsfbf2, which Debian's libgcc 12 lacks.
void approximateMath(mlir::ModuleOp module) {
  mlir::RewritePatternSet patterns(module.getContext());
  mlir::populateMathPolynomialApproximationPatterns(patterns);
  mlir::arith::populateExpandBFloat16Patterns(patterns);
  if (mlir::failed(mlir::applyPatternsAndFoldGreedily(module, std::move(patterns))))
    throw std::logic_error("MLIR math approximation did not converge");
}

void lowerToLlvmDialect(mlir::ModuleOp module) {
  approximateMath(module);
  mlir::PassManager pm(module.getContext());
  pm.addPass(mlir::createCanonicalizerPass());
  pm.addPass(mlir::createCSEPass());
  pm.addPass(mlir::createConvertSCFToCFPass());
  pm.addPass(mlir::createConvertVectorToLLVMPass());
  pm.addPass(mlir::createConvertMathToLLVMPass());
  // What has no LLVM intrinsic (f64 tanh and erf) calls libm.
  pm.addPass(mlir::createConvertMathToLibmPass());
  pm.addPass(mlir::memref::createExpandStridedMetadataPass());
  pm.addPass(mlir::createFinalizeMemRefToLLVMConversionPass());
  pm.addPass(mlir::createArithToLLVMConversionPass());
  pm.addPass(mlir::createConvertControlFlowToLLVMPass());
  pm.addPass(mlir::createConvertFuncToLLVMPass());
  pm.addPass(mlir::createReconcileUnrealizedCastsPass());
  runPasses(module, pm, "lowering to the LLVM dialect");
}

std::unique_ptr<llvm::TargetMachine>
hostMachine(llvm::CodeGenOptLevel level = llvm::CodeGenOptLevel::Aggressive) {
  initializeLlvm();
  auto builder = llvm::orc::JITTargetMachineBuilder::detectHost();
  if (!builder)
    throw Error("cannot detect the host CPU: " + llvm::toString(builder.takeError()));
  builder->setCodeGenOptLevel(level);
  builder->setRelocationModel(llvm::Reloc::PIC_);
  auto machine = builder->createTargetMachine();
  if (!machine)
    throw Error("cannot create a target machine: " + llvm::toString(machine.takeError()));
  return std::move(*machine);
}

std::unique_ptr<llvm::Module> translate(mlir::ModuleOp module, llvm::LLVMContext &context,
                                        llvm::TargetMachine &machine) {
  auto llvmModule = mlir::translateModuleToLLVMIR(module, context);
  if (!llvmModule)
    throw std::logic_error("translating the LLVM dialect to LLVM IR failed");
  llvmModule->setDataLayout(machine.createDataLayout());
  llvmModule->setTargetTriple(machine.getTargetTriple().getTriple());
  // Every function may use the host's full vector width.
  for (llvm::Function &f : *llvmModule) {
    if (f.isDeclaration())
      continue;
    f.addFnAttr("target-cpu", machine.getTargetCPU());
    f.addFnAttr("target-features", machine.getTargetFeatureString());
    f.addFnAttr("prefer-vector-width", "512");
  }
  return llvmModule;
}

void optimize(llvm::Module &module, llvm::TargetMachine &machine) {
  llvm::LoopAnalysisManager lam;
  llvm::FunctionAnalysisManager fam;
  llvm::CGSCCAnalysisManager cgam;
  llvm::ModuleAnalysisManager mam;
  llvm::PipelineTuningOptions tuning;
  tuning.LoopVectorization = true;
  tuning.SLPVectorization = true;
  llvm::PassBuilder builder(&machine, tuning);
  builder.registerModuleAnalyses(mam);
  builder.registerCGSCCAnalyses(cgam);
  builder.registerFunctionAnalyses(fam);
  builder.registerLoopAnalyses(lam);
  builder.crossRegisterProxies(lam, fam, cgam, mam);
  llvm::ModulePassManager mpm = builder.buildPerModuleDefaultPipeline(llvm::OptimizationLevel::O3);
  mpm.run(module, mam);
}

std::string printLlvm(const llvm::Module &module) {
  std::string text;
  llvm::raw_string_ostream os(text);
  module.print(os, nullptr);
  return os.str();
}

class OrcObject : public LoadedObject {
public:
  explicit OrcObject(const std::vector<std::string> &objects) {
    initializeLlvm();
    auto jit = llvm::orc::LLJITBuilder().create();
    if (!jit)
      throw Error("cannot start the JIT: " + llvm::toString(jit.takeError()));
    jit_ = std::move(*jit);
    // Kernels may call libm (erf and tanh in f64).
    auto generator = llvm::orc::DynamicLibrarySearchGenerator::GetForCurrentProcess(
        jit_->getDataLayout().getGlobalPrefix());
    if (!generator)
      throw Error("JIT: " + llvm::toString(generator.takeError()));
    jit_->getMainJITDylib().addGenerator(std::move(*generator));
    for (const std::string &bytes : objects) {
      auto buffer = llvm::MemoryBuffer::getMemBufferCopy(bytes, "stepc-kernels");
      if (auto err = jit_->addObjectFile(std::move(buffer)))
        throw Error("JIT: cannot load kernels: " + llvm::toString(std::move(err)));
    }
  }

  void *symbol(const std::string &name) override {
    auto address = jit_->lookup(name);
    if (!address)
      throw Error(fmt::format("JIT: kernel symbol '{}' is missing: {}", name,
                              llvm::toString(address.takeError())));
    return address->toPtr<void *>();
  }

private:
  std::unique_ptr<llvm::orc::LLJIT> jit_;
};

} // namespace

std::string lowerToStage(const std::string &mlirModule, Stage stage) {
  auto context = makeContext();
  auto module = parse(*context, mlirModule);
  if (stage == Stage::Mlir) {
    std::string text;
    llvm::raw_string_ostream os(text);
    module->print(os);
    return os.str();
  }
  lowerToLlvmDialect(*module);
  if (stage == Stage::LlvmDialect) {
    std::string text;
    llvm::raw_string_ostream os(text);
    module->print(os);
    return os.str();
  }
  auto machine = hostMachine();
  llvm::LLVMContext llvmContext;
  auto llvmModule = translate(*module, llvmContext, *machine);
  if (stage == Stage::OptimizedLlvmIr)
    optimize(*llvmModule, *machine);
  return printLlvm(*llvmModule);
}

namespace {

std::string compileToObject(const std::string &mlirModule, const std::string &dataSymbol,
                            std::string_view data, ObjectTimes *times,
                            Optimization optimization) {
  ObjectTimes ignored;
  ObjectTimes &t = times ? *times : ignored;
  auto start = std::chrono::steady_clock::now();
  auto lap = [&](double &into) {
    auto now = std::chrono::steady_clock::now();
    into += std::chrono::duration<double>(now - start).count();
    start = now;
  };
  auto context = makeContext();
  auto module = parse(*context, mlirModule);
  lap(t.parse);
  lowerToLlvmDialect(*module);
  lap(t.lowering);
  bool full = optimization == Optimization::Full;
  auto machine = hostMachine(full ? llvm::CodeGenOptLevel::Aggressive : llvm::CodeGenOptLevel::None);
  llvm::LLVMContext llvmContext;
  auto llvmModule = translate(*module, llvmContext, *machine);
  if (full)
    optimize(*llvmModule, *machine);
  lap(t.optimize);
  if (!dataSymbol.empty()) {
    // At least one byte: a zero-length array would have no address to take.
    std::string bytes(data.empty() ? std::string_view("\0", 1) : data);
    llvm::Type *byte = llvm::Type::getInt8Ty(llvmContext);
    auto *init = llvm::ConstantDataArray::getRaw(bytes, bytes.size(), byte);
    auto *global = new llvm::GlobalVariable(*llvmModule, init->getType(), /*isConstant=*/true,
                                            llvm::GlobalValue::ExternalLinkage, init, dataSymbol);
    global->setAlignment(llvm::Align(64));
  }

  llvm::SmallVector<char, 0> buffer;
  llvm::raw_svector_ostream os(buffer);
  llvm::legacy::PassManager pm;
  if (machine->addPassesToEmitFile(pm, os, nullptr, llvm::CodeGenFileType::ObjectFile))
    throw std::logic_error("the host target cannot emit object files");
  pm.run(*llvmModule);
  lap(t.codegen);
  return std::string(buffer.begin(), buffer.end());
}

} // namespace

std::string compileToObject(const std::string &mlirModule, ObjectTimes *times,
                            Optimization optimization) {
  return compileToObject(mlirModule, "", "", times, optimization);
}

std::string compileToObject(const std::string &mlirModule, const std::string &dataSymbol,
                            std::string_view data) {
  return compileToObject(mlirModule, dataSymbol, data, nullptr, Optimization::Full);
}

std::string hostTargetDescription() {
  auto machine = hostMachine();
  return fmt::format("{} {} {}", machine->getTargetTriple().getTriple(),
                     machine->getTargetCPU().str(), machine->getTargetFeatureString().str());
}

int hostVectorRegisterBits() {
  static const int bits = [] {
    auto machine = hostMachine();
    return llvm::StringRef(machine->getTargetFeatureString()).contains("+avx512f") ? 512 : 256;
  }();
  return bits;
}

bool hostHasAvx512Bf16() {
  static const bool has = [] {
    auto machine = hostMachine();
    return llvm::StringRef(machine->getTargetFeatureString()).contains("+avx512bf16");
  }();
  return has;
}

std::shared_ptr<LoadedObject> LoadedObject::load(const std::string &objectBytes) {
  return std::make_shared<OrcObject>(std::vector<std::string>{objectBytes});
}

std::shared_ptr<LoadedObject> LoadedObject::load(const std::vector<std::string> &objects) {
  return std::make_shared<OrcObject>(objects);
}

} // namespace stepc::codegen
