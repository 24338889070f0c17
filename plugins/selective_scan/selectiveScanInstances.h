// The per-dtype kernel instantiations (selectiveScanKernelFp32.cu, selectiveScanKernelFp16.cu) as the launcher
// (selectiveScanForward.cu) calls them. Host-only: no device code, no TensorRT. The launch configuration they take
// is computed in selectiveScanLaunchConfig.h, which has no CUDA dependency.
#pragma once

#include "selectiveScanForward.h"
#include "selectiveScanLaunchConfig.h"

#include <cuda_runtime_api.h>

namespace m2s2l
{
namespace scan_detail
{

// Launch the instantiation for the dtype with config.statesPerThread; parameters are already validated.
cudaError_t launchSelectiveScanFp32(SelectiveScanParams const& params, ScanLaunchConfig const& config,
    cudaStream_t stream);
cudaError_t launchSelectiveScanFp16(SelectiveScanParams const& params, ScanLaunchConfig const& config,
    cudaStream_t stream);

} // namespace scan_detail
} // namespace m2s2l
