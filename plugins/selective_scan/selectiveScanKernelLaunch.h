// Internal interface between the launcher (selectiveScanKernel.cu) and the per-dtype kernel instantiations
// (selectiveScanKernelFp32.cu, selectiveScanKernelFp16.cu). Host-only: no device code, no TensorRT. The tile
// constants and the launch configuration itself are in selectiveScanLaunchConfig.h (no CUDA dependency).
#pragma once

#include "selectiveScanKernel.h"
#include "selectiveScanLaunchConfig.h"

#include <cuda_runtime_api.h>
#include <cstddef>
#include <cstdint>

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
