#include "conv_dispatch.hpp"

#include "cudnn_check.hpp"

namespace knetcnn {
namespace {

template <typename Perf>
std::vector<PerfRecord> to_records(const Perf* perf, int returned, int requested) {
  std::vector<PerfRecord> out;
  // cuDNN fills only the first `returned` rows; never read past them.
  if (returned < 0) returned = 0;
  if (returned > requested) returned = requested;
  for (int i = 0; i < returned; ++i)
    out.push_back(PerfRecord{static_cast<int>(perf[i].algo), perf[i].status, perf[i].time, perf[i].memory,
                             perf[i].determinism, perf[i].mathType});
  return out;
}

}  // namespace

std::vector<PerfRecord> conv_heuristic_results(cudnnHandle_t handle, ConvDirection direction,
                                               const ConvDescriptorRefs& d, const std::string& context) {
  int returned = 0;
  switch (direction) {
    case ConvDirection::Forward: {
      cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT] = {};
      KNETCNN_CUDNN_CTX(cudnnGetConvolutionForwardAlgorithm_v7(handle, d.x.get(), d.w.get(), d.conv.get(), d.y.get(),
                                                           CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &returned, perf), context);
      return to_records(perf, returned, CUDNN_CONVOLUTION_FWD_ALGO_COUNT);
    }
    case ConvDirection::BackwardData: {
      cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT] = {};
      // (filterDesc, diffDesc = dy, convDesc, gradDesc = dx)
      KNETCNN_CUDNN_CTX(cudnnGetConvolutionBackwardDataAlgorithm_v7(handle, d.w.get(), d.y.get(), d.conv.get(),
                                                                d.x.get(), CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT,
                                                                &returned, perf), context);
      return to_records(perf, returned, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT);
    }
    case ConvDirection::BackwardFilter: {
      cudnnConvolutionBwdFilterAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT] = {};
      // (srcDesc = x, diffDesc = dy, convDesc, gradDesc = dw)
      KNETCNN_CUDNN_CTX(cudnnGetConvolutionBackwardFilterAlgorithm_v7(handle, d.x.get(), d.y.get(), d.conv.get(),
                                                                  d.w.get(), CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT,
                                                                  &returned, perf), context);
      return to_records(perf, returned, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT);
    }
  }
  return {};
}

std::vector<PerfRecord> conv_benchmark_results(cudnnHandle_t handle, ConvDirection direction,
                                               const ConvDescriptorRefs& d, const ConvPointers& p,
                                               void* workspace, std::size_t workspace_bytes,
                                               const std::string& context) {
  int returned = 0;
  switch (direction) {
    case ConvDirection::Forward: {
      cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT] = {};
      // (xDesc, x, wDesc, w, convDesc, yDesc, y = scratch, ..., workSpace, size)
      KNETCNN_CUDNN_CTX(cudnnFindConvolutionForwardAlgorithmEx(handle, d.x.get(), p.x, d.w.get(), p.w, d.conv.get(),
                                                           d.y.get(), p.output, CUDNN_CONVOLUTION_FWD_ALGO_COUNT,
                                                           &returned, perf, workspace, workspace_bytes), context);
      return to_records(perf, returned, CUDNN_CONVOLUTION_FWD_ALGO_COUNT);
    }
    case ConvDirection::BackwardData: {
      cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT] = {};
      // (wDesc, w, dyDesc, dy, convDesc, dxDesc, dx = scratch, ..., workSpace, size)
      KNETCNN_CUDNN_CTX(cudnnFindConvolutionBackwardDataAlgorithmEx(
          handle, d.w.get(), p.w, d.y.get(), p.y, d.conv.get(), d.x.get(), p.output,
          CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &returned, perf, workspace, workspace_bytes), context);
      return to_records(perf, returned, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT);
    }
    case ConvDirection::BackwardFilter: {
      cudnnConvolutionBwdFilterAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT] = {};
      // (xDesc, x, dyDesc, dy, convDesc, dwDesc, dw = scratch, ..., workSpace, size)
      KNETCNN_CUDNN_CTX(cudnnFindConvolutionBackwardFilterAlgorithmEx(
          handle, d.x.get(), p.x, d.y.get(), p.y, d.conv.get(), d.w.get(), p.output,
          CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &returned, perf, workspace, workspace_bytes), context);
      return to_records(perf, returned, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT);
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
