// Runtime queries work on any machine; GPU cases skip, with the reason, where no GPU is usable.
#include <gtest/gtest.h>

#include <cudnn.h>

#include "errors.hpp"
#include "runtime_info.hpp"

using namespace knetcnn;

TEST(Runtime, VersionsAreConsistent) {
  const RuntimeInfo info = query_runtime();
  EXPECT_EQ(info.cudnn_runtime_version / 10000, info.cudnn_build_version / 10000);
  EXPECT_EQ(info.cudnn_build_version, static_cast<std::size_t>(CUDNN_VERSION));
  EXPECT_EQ(info.cuda_build_version / 1000, 12);
  EXPECT_GT(info.cuda_runtime_version, 0);
  // Either devices or a reason, never both and never neither.
  EXPECT_NE(info.devices.empty(), info.no_device_reason.empty());
}

TEST(Runtime, RequireDeviceExplainsOrSucceeds) {
  const std::string reason = device_unavailable_reason(0);
  if (reason.empty()) {
    EXPECT_NO_THROW(require_device(0));
    return;
  }
  try {
    require_device(0);
    FAIL() << "require_device did not throw although: " << reason;
  } catch (const DeviceUnavailable& e) {
    EXPECT_NE(std::string(e.what()).find(reason), std::string::npos);
  }
  // Without a device cuDNN cannot make a handle: the reason execution must be refused up front.
  cudnnHandle_t handle = nullptr;
  EXPECT_NE(cudnnCreate(&handle), CUDNN_STATUS_SUCCESS);
}

TEST(RuntimeGpu, HandleCreationOnDevice0) {
  const std::string reason = device_unavailable_reason(0);
  if (!reason.empty()) GTEST_SKIP() << "gpu tier: " << reason;
  cudnnHandle_t handle = nullptr;
  ASSERT_EQ(cudnnCreate(&handle), CUDNN_STATUS_SUCCESS);
  EXPECT_EQ(cudnnDestroy(handle), CUDNN_STATUS_SUCCESS);
  const RuntimeInfo info = query_runtime();
  ASSERT_FALSE(info.devices.empty());
  EXPECT_GE(info.devices[0].major, 5);
  EXPECT_GT(info.driver_version, 0);
}
