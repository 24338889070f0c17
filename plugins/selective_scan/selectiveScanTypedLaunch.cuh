// Kernel launch for one (dtype, states per thread) instantiation; included by the per-dtype .cu files only.
#pragma once

#include "selectiveScanDeviceKernel.cuh"
#include "selectiveScanInstances.h"

namespace m2s2l
{
namespace scan_detail
{

template <typename T, int32_t kStates>
cudaError_t launchTyped(SelectiveScanParams const& params, ScanLaunchConfig const& config, cudaStream_t stream)
{
    auto const kernel = selectiveScanFwdKernel<T, kStates>;
    if (config.smemBytes > kDEFAULT_SMEM_BYTES)
    {
        cudaError_t const status = cudaFuncSetAttribute(
            kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(config.smemBytes));
        if (status != cudaSuccess)
        {
            return status;
        }
    }
    kernel<<<config.numBlocks, kTHREADS, config.smemBytes, stream>>>(params, config.lanesLog2, config.tilesPerGroup);
    return cudaGetLastError();
}

template <typename T>
cudaError_t launchForStates(SelectiveScanParams const& params, ScanLaunchConfig const& config, cudaStream_t stream)
{
    switch (config.statesPerThread)
    {
    case 2: return launchTyped<T, 2>(params, config, stream);
    case 4: return launchTyped<T, 4>(params, config, stream);
    case 8: return launchTyped<T, 8>(params, config, stream);
    default: return cudaErrorInvalidValue;
    }
}

} // namespace scan_detail
} // namespace m2s2l
