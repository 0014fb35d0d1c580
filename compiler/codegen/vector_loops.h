// Small helpers for kernels written with 16-lane f32 vectors and scf.for
// loops carrying values (the attention kernels: lowering_attention.cpp,
// lowering_attention_backward.cpp).
#pragma once

#include "mlir_text.h"

#include <fmt/format.h>

#include <string>
#include <vector>

namespace stepc::codegen {

inline constexpr const char *kVec = "vector<16xf32>";
inline constexpr int64_t kLanes = 16;

inline int64_t roundUp(int64_t n, int64_t to) { return (n + to - 1) / to * to; }

inline std::string addIndex(MlirWriter &w, const std::string &a, const std::string &b) {
  return w.assign(fmt::format("arith.addi {}, {} : index", a, b));
}

inline std::string splat(MlirWriter &w, const std::string &scalar) {
  return w.assign(fmt::format("vector.broadcast {} : f32 to {}", scalar, kVec));
}

// An index on all 16 lanes, as i64 (for comparisons with lane indices).
inline std::string indexVector(MlirWriter &w, const std::string &index) {
  std::string i = w.assign(fmt::format("arith.index_cast {} : index to i64", index));
  return w.assign(fmt::format("vector.broadcast {} : i64 to vector<16xi64>", i));
}

// base, base + 1, ..., base + 15 as a vector<16xi64>.
inline std::string laneIndices(MlirWriter &w, const std::string &base) {
  std::string lanes = "arith.constant dense<[0";
  for (int l = 1; l < kLanes; ++l)
    lanes += fmt::format(", {}", l);
  return w.assign(fmt::format("arith.addi {}, {} : vector<16xi64>", indexVector(w, base),
                              w.assign(lanes + "]> : vector<16xi64>")));
}

// Opens `scf.for iv = lb to ub step step` carrying `inits` of `types`;
// returns the iteration arguments' names, and the results' in `results`.
inline std::vector<std::string> openCarryingFor(MlirWriter &w, const std::string &iv,
                                         const std::string &lb, const std::string &ub,
                                         int64_t step, const std::vector<std::string> &inits,
                                         const std::vector<std::string> &types,
                                         std::vector<std::string> &results) {
  std::string res = w.fresh("t");
  std::vector<std::string> args, names;
  for (size_t i = 0; i < inits.size(); ++i) {
    names.push_back(w.fresh("c"));
    args.push_back(fmt::format("{} = {}", names.back(), inits[i]));
    results.push_back(fmt::format("{}#{}", res, i));
  }
  w.line(fmt::format("{}:{} = scf.for {} = {} to {} step {} iter_args({}) -> ({}) {{", res,
                     inits.size(), iv, lb, ub, w.indexConstant(step), fmt::join(args, ", "),
                     fmt::join(types, ", ")));
  w.indent();
  w.pushScope();
  return names;
}

inline void closeCarryingFor(MlirWriter &w, const std::vector<std::string> &yields,
                      const std::vector<std::string> &types) {
  w.line(fmt::format("scf.yield {} : {}", fmt::join(yields, ", "), fmt::join(types, ", ")));
  w.popScope();
  w.dedent();
  w.line("}");
}

// `scf.for iv = lb to ub step step` without results; close with w.endFor().
inline std::string openSteppedFor(MlirWriter &w, const std::string &lb, const std::string &ub,
                           int64_t step) {
  std::string iv = w.fresh("i");
  w.line(fmt::format("scf.for {} = {} to {} step {} {{", iv, lb, ub, w.indexConstant(step)));
  w.indent();
  w.pushScope();
  return iv;
}

// body(column, width) over `pieces` 16-lane pieces in groups of `group`
// (a register tile's vectors per row): a loop over the whole groups, then
// one narrower group where pieces % group != 0.
template <typename Body>
void forPieceGroups(MlirWriter &w, int64_t pieces, int group, Body body) {
  int64_t wholeGroupsEnd = pieces / group * group * kLanes;
  if (wholeGroupsEnd > 0) {
    std::string c = openSteppedFor(w, w.indexConstant(0), w.indexConstant(wholeGroupsEnd),
                                   group * kLanes);
    body(c, group);
    w.endFor();
  }
  if (pieces % group != 0)
    body(w.indexConstant(wholeGroupsEnd), static_cast<int>(pieces % group));
}

// The flat index, in the value that the f32 matrix view `view` of type
// `type` shows (stridedMatrix's views, whose offset and strides count that
// value's elements), of the view's element [row, col]. Fault injection's
// "element at an even flat index" is counted so: in the layout stored,
// whatever view (a head merge) a kernel stores through.
inline std::string flatIndexInValue(MlirWriter &w, const std::string &view,
                                    const std::string &type, const std::string &row,
                                    const std::string &col) {
  std::string meta = w.fresh("meta");
  w.line(fmt::format("{}:6 = memref.extract_strided_metadata {} : {} -> memref<f32>, index, "
                     "index, index, index, index",
                     meta, view, type));
  auto scaled = [&](const std::string &i, int result) {
    return w.assign(fmt::format("arith.muli {}, {}#{} : index", i, meta, result));
  };
  return addIndex(w, w.assign(fmt::format("arith.addi {}#1, {} : index", meta, scaled(row, 4))),
                  scaled(col, 5));
}

} // namespace stepc::codegen
