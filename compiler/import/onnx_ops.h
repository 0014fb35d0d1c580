// Internal to the ONNX importer: helpers shared by the mapping functions, and
// the mapping functions of onnx_shape_ops.cpp and onnx_nn_ops.cpp, which the
// table in onnx_ops.cpp names.
#pragma once

#include "onnx_context.h"

namespace stepc::onnx_import {

// The most elements a value computed at import (ConstantOfShape, Range, index
// lists) may have: a corrupt model must not make the importer allocate
// gigabytes.
inline constexpr int64_t kMaxImportElements = int64_t(1) << 24;

// Axis in [-rank, rank) -> [0, rank); out of range is an error naming `what`.
int64_t normalizeAxis(NodeContext &c, int64_t axis, int64_t rank, std::string_view what);
// Normalized, sorted, without repeats (a repeat is an error).
std::vector<int64_t> normalizeAxes(NodeContext &c, std::vector<int64_t> axes, int64_t rank,
                                   std::string_view what);
// A scalar constant of `like`'s dtype.
Value scalarOf(NodeContext &c, Value like, double value);
Value indexConstant(NodeContext &c, const std::vector<int64_t> &values);
// Moves the last axis of x to position `axis`.
Value moveLastAxisTo(Value x, int64_t axis);
// i + size where i < 0 (ONNX counts negative indices from the end).
Value wrapNegativeIndices(NodeContext &c, Value indices, int64_t size);
// x[..., start:limit, ...] along one axis.
Value sliceAxis(Value x, int64_t axis, int64_t start, int64_t limit);
// matmul with NumPy's rules for 1-D operands.
Value matmulNd(Value a, Value b);

// onnx_shape_ops.cpp
void mapTranspose(NodeContext &c);
void mapReshape(NodeContext &c);
void mapFlatten(NodeContext &c);
void mapSqueeze(NodeContext &c);
void mapUnsqueeze(NodeContext &c);
void mapConcat(NodeContext &c);
void mapSplit(NodeContext &c);
void mapSlice(NodeContext &c);
void mapGather(NodeContext &c);
void mapGatherElements(NodeContext &c);
void mapExpand(NodeContext &c);
void mapTile(NodeContext &c);
void mapRange(NodeContext &c);
void mapTrilu(NodeContext &c);
void mapOneHot(NodeContext &c);
void mapDepthToSpace(NodeContext &c);
void mapSpaceToDepth(NodeContext &c);

// onnx_nn_ops.cpp
void mapConv(NodeContext &c);
void mapMaxPool(NodeContext &c);
void mapLRN(NodeContext &c);
void mapMaxUnpool(NodeContext &c);
void mapAveragePool(NodeContext &c);
void mapGlobalAveragePool(NodeContext &c);
void mapGlobalMaxPool(NodeContext &c);
void mapBatchNormalization(NodeContext &c);
void mapInstanceNormalization(NodeContext &c);
void mapLayerNormalization(NodeContext &c);
void mapMeanVarianceNormalization(NodeContext &c);
void mapPad(NodeContext &c);
void mapClip(NodeContext &c);
void mapLeakyRelu(NodeContext &c);
void mapElu(NodeContext &c);
void mapSelu(NodeContext &c);
void mapCelu(NodeContext &c);
void mapPRelu(NodeContext &c);
void mapThresholdedRelu(NodeContext &c);
void mapHardSigmoid(NodeContext &c);
void mapHardSwish(NodeContext &c);
void mapSoftplus(NodeContext &c);
void mapSoftsign(NodeContext &c);
void mapShrink(NodeContext &c);
void mapGelu(NodeContext &c);
void mapTan(NodeContext &c);
void mapSinh(NodeContext &c);
void mapCosh(NodeContext &c);
void mapNegativeLogLikelihoodLoss(NodeContext &c);
void mapSoftmaxCrossEntropyLoss(NodeContext &c);
void mapConvTranspose(NodeContext &c);

// onnx_math_ops.cpp
// floor(x) of a floating-point value (stepc has no rounding op).
Value floorOf(NodeContext &c, Value x);
// Rounds half to even, as ONNX's Round (and NumPy's).
Value roundHalfEven(NodeContext &c, Value x);
// Whether the integer-valued float x is even: x - 2 floor(x / 2) == 0.
Value isEvenInteger(NodeContext &c, Value x);
void mapFloor(NodeContext &c);
void mapCeil(NodeContext &c);
void mapRound(NodeContext &c);
void mapMod(NodeContext &c);
void mapDet(NodeContext &c);
void mapAtan(NodeContext &c);
void mapAsin(NodeContext &c);
void mapAcos(NodeContext &c);
void mapAsinh(NodeContext &c);
void mapAcosh(NodeContext &c);
void mapAtanh(NodeContext &c);
void mapEyeLike(NodeContext &c);
void mapHannWindow(NodeContext &c);
void mapHammingWindow(NodeContext &c);
void mapBlackmanWindow(NodeContext &c);
void mapEinsum(NodeContext &c);
void mapTopK(NodeContext &c);

// onnx_index_ops.cpp
void mapScatterElements(NodeContext &c);
void mapGatherND(NodeContext &c);
void mapScatterND(NodeContext &c);
void mapCompress(NodeContext &c);
void mapNonZero(NodeContext &c);
void mapUnique(NodeContext &c);
void mapNonMaxSuppression(NodeContext &c);

// onnx_resize_ops.cpp
void mapResize(NodeContext &c);
void mapUpsample(NodeContext &c);
void mapGridSample(NodeContext &c);

// onnx_rnn_ops.cpp
void mapRnn(NodeContext &c);
void mapGru(NodeContext &c);
void mapLstm(NodeContext &c);

// onnx_index_ops.cpp (more)
void mapReverseSequence(NodeContext &c);

// onnx_quant_ops.cpp
void mapBitShift(NodeContext &c);
void mapQuantizeLinear(NodeContext &c);
void mapDequantizeLinear(NodeContext &c);
void mapDynamicQuantizeLinear(NodeContext &c);
void mapMatMulInteger(NodeContext &c);
void mapQLinearMatMul(NodeContext &c);

// onnx_training_ops.cpp (domain ai.onnx.preview.training)
void mapAdagrad(NodeContext &c);
void mapMomentum(NodeContext &c);
void mapAdam(NodeContext &c);

} // namespace stepc::onnx_import
