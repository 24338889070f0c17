// Launcher of the forward selective scan: validates the parameters, configures the launch (selectiveScanLaunchConfig.h)
// and dispatches on the I/O dtype. Host code only; the kernels live in selectiveScanDeviceKernel.cuh, instantiated
// per dtype.
#include "selectiveScanForward.h"
#include "selectiveScanInstances.h"

#include <cuda_runtime_api.h>
#include <cstdint>

namespace m2s2l
{
namespace
{

using scan_detail::ScanConfigStatus;
using scan_detail::ScanDeviceLimits;
using scan_detail::ScanLaunchConfig;
using scan_detail::ScanShape;

bool isValid(SelectiveScanParams const& p, ScanShape const& shape)
{
    if (p.ioDtype != ScanDType::kFLOAT32 && p.ioDtype != ScanDType::kFLOAT16)
    {
        return false;
    }
    if (p.u == nullptr || p.delta == nullptr || p.A == nullptr || p.B == nullptr || p.C == nullptr || p.y == nullptr)
    {
        return false;
    }
    return scan_detail::isValidShape(shape) && p.seqlen >= 1;
}

cudaError_t deviceAttribute(cudaDeviceAttr attribute, int& value)
{
    int device = 0;
    cudaError_t const status = cudaGetDevice(&device);
    return status == cudaSuccess ? cudaDeviceGetAttribute(&value, attribute, device) : status;
}

// The configuration comes from scan_detail::makeLaunchConfig (shared with the CPU tests); this only asks the device
// for the limits it needs: the SM count when it chooses the variant, the opt-in shared memory when a tile exceeds
// the default 48 KiB (first computed against that default, then against the device's real ceiling).
cudaError_t makeConfig(ScanShape const& shape, ScanLaunchConfig& config)
{
    ScanDeviceLimits limits{1, scan_detail::kDEFAULT_SMEM_BYTES};
    if (scan_detail::needsSmCount(shape))
    {
        int smCount = 0;
        cudaError_t const status = deviceAttribute(cudaDevAttrMultiProcessorCount, smCount);
        if (status != cudaSuccess)
        {
            return status;
        }
        limits.smCount = smCount;
    }
    ScanConfigStatus result = scan_detail::makeLaunchConfig(shape, limits, config);
    if (result == ScanConfigStatus::kTOO_MUCH_SMEM)
    {
        int optin = 0;
        cudaError_t const status = deviceAttribute(cudaDevAttrMaxSharedMemoryPerBlockOptin, optin);
        if (status != cudaSuccess)
        {
            return status;
        }
        limits.maxSmemOptin = static_cast<size_t>(optin);
        result = scan_detail::makeLaunchConfig(shape, limits, config);
    }
    switch (result)
    {
    case ScanConfigStatus::kOK: return cudaSuccess;
    case ScanConfigStatus::kTOO_MUCH_SMEM: return cudaErrorInvalidConfiguration;
    case ScanConfigStatus::kINVALID_SHAPE:
    case ScanConfigStatus::kGRID_TOO_LARGE: break;
    }
    return cudaErrorInvalidValue;
}

} // namespace

cudaError_t selectiveScanForward(SelectiveScanParams const& params, cudaStream_t stream)
{
    ScanShape const shape{params.batch, params.dim, params.groups, params.dstate, params.z != nullptr,
        params.statesPerThread};
    if (!isValid(params, shape))
    {
        return cudaErrorInvalidValue;
    }
    ScanLaunchConfig config{};
    cudaError_t const status = makeConfig(shape, config);
    if (status != cudaSuccess)
    {
        return status;
    }
    if (params.ioDtype == ScanDType::kFLOAT16)
    {
        return scan_detail::launchSelectiveScanFp16(params, config, stream);
    }
    return scan_detail::launchSelectiveScanFp32(params, config, stream);
}

} // namespace m2s2l
