#include "conv_dispatch.hpp"

#include <algorithm>

#include "cudnn_check.hpp"

namespace knetcnn {
namespace {

template <typename Perf>
std::vector<PerfRecord> to_records(const std::vector<Perf>& perf, int returned) {
  std::vector<PerfRecord> out;
  // cuDNN fills only the first `returned` rows; never read past them.
  if (returned < 0) returned = 0;
  if (returned > static_cast<int>(perf.size())) returned = static_cast<int>(perf.size());
  for (int i = 0; i < returned; ++i)
    out.push_back(PerfRecord{static_cast<int>(perf[i].algo), perf[i].status, perf[i].time, perf[i].memory,
                             perf[i].determinism, perf[i].mathType});
  return out;
}

// How many result rows cuDNN may return: cudnnGetConvolution*AlgorithmMaxCount, which counts rows
// (an algorithm may appear once per math type), not the *_ALGO_COUNT enumerators. At least the
// enumerator count, so that a library reporting less still gets room for every algorithm.
int max_rows(cudnnHandle_t handle, ConvDirection direction) {
  int count = 0;
  switch (direction) {
    case ConvDirection::Forward:
      KNETCNN_CUDNN(cudnnGetConvolutionForwardAlgorithmMaxCount(handle, &count));
      break;
    case ConvDirection::BackwardData:
      KNETCNN_CUDNN(cudnnGetConvolutionBackwardDataAlgorithmMaxCount(handle, &count));
      break;
    case ConvDirection::BackwardFilter:
      KNETCNN_CUDNN(cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(handle, &count));
      break;
  }
  return std::max(count, conv_algo_count(direction));
}

}  // namespace

std::vector<PerfRecord> conv_heuristic_results(cudnnHandle_t handle, ConvDirection direction,
                                               const ConvDescriptorRefs& d, const std::string& context) {
  int returned = 0;
  const int rows = max_rows(handle, direction);
  switch (direction) {
    case ConvDirection::Forward: {
      std::vector<cudnnConvolutionFwdAlgoPerf_t> perf(rows);
      KNETCNN_CUDNN_CTX(cudnnGetConvolutionForwardAlgorithm_v7(handle, d.x.get(), d.w.get(), d.conv.get(), d.y.get(),
                                                               rows, &returned, perf.data()),
                        context);
      return to_records(perf, returned);
    }
    case ConvDirection::BackwardData: {
      std::vector<cudnnConvolutionBwdDataAlgoPerf_t> perf(rows);
      // (filterDesc, diffDesc = dy, convDesc, gradDesc = dx)
      KNETCNN_CUDNN_CTX(cudnnGetConvolutionBackwardDataAlgorithm_v7(handle, d.w.get(), d.y.get(), d.conv.get(),
                                                                    d.x.get(), rows, &returned, perf.data()),
                        context);
      return to_records(perf, returned);
    }
    case ConvDirection::BackwardFilter: {
      std::vector<cudnnConvolutionBwdFilterAlgoPerf_t> perf(rows);
      // (srcDesc = x, diffDesc = dy, convDesc, gradDesc = dw)
      KNETCNN_CUDNN_CTX(cudnnGetConvolutionBackwardFilterAlgorithm_v7(handle, d.x.get(), d.y.get(), d.conv.get(),
                                                                      d.w.get(), rows, &returned, perf.data()),
                        context);
      return to_records(perf, returned);
    }
  }
  return {};
}

std::vector<PerfRecord> conv_benchmark_results(cudnnHandle_t handle, ConvDirection direction,
                                               const ConvDescriptorRefs& d, const ConvPointers& p,
                                               void* workspace, std::size_t workspace_bytes,
                                               const std::string& context) {
  int returned = 0;
  const int rows = max_rows(handle, direction);
  switch (direction) {
    case ConvDirection::Forward: {
      std::vector<cudnnConvolutionFwdAlgoPerf_t> perf(rows);
      // (xDesc, x, wDesc, w, convDesc, yDesc, y = written, ..., workSpace, size)
      KNETCNN_CUDNN_CTX(cudnnFindConvolutionForwardAlgorithmEx(handle, d.x.get(), p.x, d.w.get(), p.w, d.conv.get(),
                                                               d.y.get(), p.output, rows, &returned, perf.data(),
                                                               workspace, workspace_bytes),
                        context);
      return to_records(perf, returned);
    }
    case ConvDirection::BackwardData: {
      std::vector<cudnnConvolutionBwdDataAlgoPerf_t> perf(rows);
      // (wDesc, w, dyDesc, dy, convDesc, dxDesc, dx = written, ..., workSpace, size)
      KNETCNN_CUDNN_CTX(cudnnFindConvolutionBackwardDataAlgorithmEx(handle, d.w.get(), p.w, d.y.get(), p.y,
                                                                    d.conv.get(), d.x.get(), p.output, rows,
                                                                    &returned, perf.data(), workspace,
                                                                    workspace_bytes),
                        context);
      return to_records(perf, returned);
    }
    case ConvDirection::BackwardFilter: {
      std::vector<cudnnConvolutionBwdFilterAlgoPerf_t> perf(rows);
      // (xDesc, x, dyDesc, dy, convDesc, dwDesc, dw = written, ..., workSpace, size)
      KNETCNN_CUDNN_CTX(cudnnFindConvolutionBackwardFilterAlgorithmEx(handle, d.x.get(), p.x, d.y.get(), p.y,
                                                                      d.conv.get(), d.w.get(), p.output, rows,
                                                                      &returned, perf.data(), workspace,
                                                                      workspace_bytes),
                        context);
      return to_records(perf, returned);
    }
  }
  return {};
}

cudnnStatus_t conv_workspace_size(cudnnHandle_t handle, ConvDirection direction, const ConvDescriptorRefs& d,
                                  int algo, std::size_t* bytes) {
  *bytes = 0;
  switch (direction) {
    case ConvDirection::Forward:
      // (xDesc, wDesc, convDesc, yDesc, algo, size)
      return cudnnGetConvolutionForwardWorkspaceSize(handle, d.x.get(), d.w.get(), d.conv.get(), d.y.get(),
                                                     static_cast<cudnnConvolutionFwdAlgo_t>(algo), bytes);
    case ConvDirection::BackwardData:
      // (wDesc, dyDesc, convDesc, dxDesc, algo, size)
      return cudnnGetConvolutionBackwardDataWorkspaceSize(handle, d.w.get(), d.y.get(), d.conv.get(), d.x.get(),
                                                          static_cast<cudnnConvolutionBwdDataAlgo_t>(algo), bytes);
    case ConvDirection::BackwardFilter:
      // (xDesc, dyDesc, convDesc, gradDesc = dw, algo, size)
      return cudnnGetConvolutionBackwardFilterWorkspaceSize(handle, d.x.get(), d.y.get(), d.conv.get(), d.w.get(),
                                                            static_cast<cudnnConvolutionBwdFilterAlgo_t>(algo),
                                                            bytes);
  }
  return CUDNN_STATUS_BAD_PARAM;
}

cudnnStatus_t conv_execute(cudnnHandle_t handle, ConvDirection direction, const ConvDescriptorRefs& d,
                           const ConvPointers& p, int algo, void* workspace, std::size_t workspace_bytes,
                           const void* alpha, const void* beta) {
  switch (direction) {
    case ConvDirection::Forward:
      // (alpha, xDesc, x, wDesc, w, convDesc, algo, workSpace, size, beta, yDesc, y)
      return cudnnConvolutionForward(handle, alpha, d.x.get(), p.x, d.w.get(), p.w, d.conv.get(),
                                     static_cast<cudnnConvolutionFwdAlgo_t>(algo), workspace, workspace_bytes, beta,
                                     d.y.get(), p.output);
    case ConvDirection::BackwardData:
      // (alpha, wDesc, w, dyDesc, dy, convDesc, algo, workSpace, size, beta, dxDesc, dx)
      return cudnnConvolutionBackwardData(handle, alpha, d.w.get(), p.w, d.y.get(), p.y, d.conv.get(),
                                          static_cast<cudnnConvolutionBwdDataAlgo_t>(algo), workspace,
                                          workspace_bytes, beta, d.x.get(), p.output);
    case ConvDirection::BackwardFilter:
      // (alpha, xDesc, x, dyDesc, dy, convDesc, algo, workSpace, size, beta, dwDesc, dw)
      return cudnnConvolutionBackwardFilter(handle, alpha, d.x.get(), p.x, d.y.get(), p.y, d.conv.get(),
                                            static_cast<cudnnConvolutionBwdFilterAlgo_t>(algo), workspace,
                                            workspace_bytes, beta, d.w.get(), p.output);
  }
  return CUDNN_STATUS_BAD_PARAM;
}

const char* conv_execute_function(ConvDirection direction) {
  switch (direction) {
    case ConvDirection::Forward: return "cudnnConvolutionForward";
    case ConvDirection::BackwardData: return "cudnnConvolutionBackwardData";
    case ConvDirection::BackwardFilter: return "cudnnConvolutionBackwardFilter";
  }
  return "?";
}

}  // namespace knetcnn
