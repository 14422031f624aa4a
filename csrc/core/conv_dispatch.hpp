// The only place that calls cuDNN's convolution functions: one wrapper per entry point, each
// dispatching on the direction, so that every argument order can be checked against the cuDNN
// API reference in one file.
//
// All tensors are in forward terms (see ConvProblem): `x` is the convolution input, `w` the
// filter, `y` the output.
//   Forward:        y  = alpha * conv(x, w)              + beta * y
//   BackwardData:   dx = alpha * conv^T(dy, w)           + beta * dx   (dx has x's descriptor,
//                                                                       dy has y's)
//   BackwardFilter: dw = alpha * d<dy, conv(x, w)>/dw    + beta * dw   (dw has w's descriptor;
//                                                                       dy has y's)
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include <cudnn.h>

#include "algo_cache.hpp"
#include "descriptors.hpp"

namespace knetcnn {

struct ConvDescriptorRefs {
  const TensorDescriptor& x;
  const FilterDescriptor& w;
  ConvolutionDescriptor& conv;  // its math type is set per candidate
  const TensorDescriptor& y;
};

// Device pointers in forward terms. For each direction two are read and one is written:
//   Forward:        reads x, w;  writes y
//   BackwardData:   reads w, y (as dy); writes x (as dx)
//   BackwardFilter: reads x, y (as dy); writes w (as dw)
struct ConvPointers {
  const void* x = nullptr;
  const void* w = nullptr;
  const void* y = nullptr;
  void* output = nullptr;  // the written one
};

// One row of cuDNN's algorithm performance results, whatever the direction.
struct PerfRecord {
  int algo = 0;
  cudnnStatus_t status = CUDNN_STATUS_SUCCESS;
  float time = 0;
  std::size_t memory = 0;
  cudnnDeterminism_t determinism = CUDNN_NON_DETERMINISTIC;
  cudnnMathType_t math_type = CUDNN_DEFAULT_MATH;
};

// cudnnGetConvolution*Algorithm_v7: cuDNN's ranking for the descriptors' current math type (rows
// of other math types may come too). Room for cudnnGetConvolution*AlgorithmMaxCount rows; only
// the `returnedAlgoCount` rows cuDNN filled are returned.
std::vector<PerfRecord> conv_heuristic_results(cudnnHandle_t handle, ConvDirection direction,
                                               const ConvDescriptorRefs& d, const std::string& context);

// cudnnFindConvolution*AlgorithmEx: runs and times the algorithms with our buffers. `p.output`
// is overwritten with garbage: a scratch buffer, or the caller's result when the call overwrites
// it anyway (beta == 0).
std::vector<PerfRecord> conv_benchmark_results(cudnnHandle_t handle, ConvDirection direction,
                                               const ConvDescriptorRefs& d, const ConvPointers& p,
                                               void* workspace, std::size_t workspace_bytes,
                                               const std::string& context);

// cudnnGetConvolution*WorkspaceSize for `algo` under the descriptor's current math type; returns
// the status (not SUCCESS where this algorithm cannot run these descriptors) and sets `bytes`.
cudnnStatus_t conv_workspace_size(cudnnHandle_t handle, ConvDirection direction, const ConvDescriptorRefs& d,
                                  int algo, std::size_t* bytes);

// cudnnConvolutionForward / BackwardData / BackwardFilter. `alpha` and `beta` point to host
// floats for half, bfloat16 and float data and to doubles for double data. Returns the status:
// the caller decides between falling back and raising.
cudnnStatus_t conv_execute(cudnnHandle_t handle, ConvDirection direction, const ConvDescriptorRefs& d,
                           const ConvPointers& p, int algo, void* workspace, std::size_t workspace_bytes,
                           const void* alpha, const void* beta);

// The cuDNN function a direction runs, for messages.
const char* conv_execute_function(ConvDirection direction);

}  // namespace knetcnn
