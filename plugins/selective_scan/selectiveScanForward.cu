// Launcher of the forward selective scan: validates the parameters, picks the kernel variant and dispatches on the
// I/O dtype. Host code only; the kernels live in selectiveScanDeviceKernel.cuh, instantiated per dtype.
#include "selectiveScanForward.h"
#include "selectiveScanLaunchConfig.h"

#include <cuda_runtime_api.h>
#include <cstdint>

namespace m2s2l
{
namespace
{

using scan_detail::ScanLaunchConfig;

constexpr int32_t kMAX_DSTATE = 256;
constexpr int32_t kMAX_LANES_LOG2 = 5; // the lanes of one channel must sit in one warp for the shuffles
// Warps per SM below which the launcher trades issue efficiency (G = 4) for twice the threads (G = 2): with fewer
// than two warps per scheduler the SFU and shared-memory latencies are no longer hidden.
constexpr int64_t kMIN_WARPS_PER_SM = 8;

int32_t ceilLog2(int32_t x)
{
    int32_t r = 0;
    while ((int32_t{1} << r) < x)
    {
        ++r;
    }
    return r;
}

// log2 of the lanes per channel for `states` states per thread, or -1 when that would need more than one warp.
int32_t lanesLog2For(int32_t dstate, int32_t states)
{
    int32_t const log2 = ceilLog2((dstate + states - 1) / states);
    return log2 <= kMAX_LANES_LOG2 ? log2 : -1;
}

bool isValid(SelectiveScanParams const& p)
{
    if (p.batch < 1 || p.dim < 1 || p.groups < 1 || p.dim % p.groups != 0 || p.seqlen < 1)
    {
        return false;
    }
    if (p.dstate < 1 || p.dstate > kMAX_DSTATE)
    {
        return false;
    }
    if (p.ioDtype != ScanDType::kFLOAT32 && p.ioDtype != ScanDType::kFLOAT16)
    {
        return false;
    }
    if (p.u == nullptr || p.delta == nullptr || p.A == nullptr || p.B == nullptr || p.C == nullptr || p.y == nullptr)
    {
        return false;
    }
    if (p.statesPerThread != 0 && p.statesPerThread != 2 && p.statesPerThread != 4 && p.statesPerThread != 8)
    {
        return false;
    }
    return p.statesPerThread == 0 || lanesLog2For(p.dstate, p.statesPerThread) >= 0;
}

cudaError_t chooseStatesPerThread(SelectiveScanParams const& p, int32_t& states)
{
    if (p.statesPerThread != 0)
    {
        states = p.statesPerThread;
        return cudaSuccess;
    }
    if (p.dstate > 64)
    {
        states = lanesLog2For(p.dstate, 4) >= 0 ? 4 : 8;
        return cudaSuccess;
    }
    int device = 0;
    cudaError_t status = cudaGetDevice(&device);
    if (status != cudaSuccess)
    {
        return status;
    }
    int smCount = 0;
    status = cudaDeviceGetAttribute(&smCount, cudaDevAttrMultiProcessorCount, device);
    if (status != cudaSuccess)
    {
        return status;
    }
    int64_t const warpsWithG4
        = (static_cast<int64_t>(p.batch) * p.dim << lanesLog2For(p.dstate, 4)) / 32;
    states = warpsWithG4 >= kMIN_WARPS_PER_SM * smCount ? 4 : 2;
    return cudaSuccess;
}

cudaError_t makeConfig(SelectiveScanParams const& p, ScanLaunchConfig& config)
{
    int32_t states = 0;
    cudaError_t status = chooseStatesPerThread(p, states);
    if (status != cudaSuccess)
    {
        return status;
    }
    config.statesPerThread = states;
    config.lanesLog2 = lanesLog2For(p.dstate, states);
    int32_t const tileChannels = scan_detail::kTHREADS >> config.lanesLog2;
    int32_t const dimPerGroup = p.dim / p.groups;
    config.tilesPerGroup = (dimPerGroup + tileChannels - 1) / tileChannels;
    int64_t const blocks = static_cast<int64_t>(p.batch) * p.groups * config.tilesPerGroup;
    if (blocks > INT32_MAX)
    {
        return cudaErrorInvalidValue;
    }
    config.numBlocks = static_cast<int32_t>(blocks);
    config.smemBytes = scan_detail::scanSmemBytes(config.lanesLog2, states, p.z != nullptr);
    if (config.smemBytes > scan_detail::kDEFAULT_SMEM_BYTES)
    {
        // Only large N (> 64) needs the opt-in shared memory; refuse rather than fail inside the launch.
        int device = 0;
        int optin = 0;
        status = cudaGetDevice(&device);
        if (status == cudaSuccess)
        {
            status = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
        }
        if (status != cudaSuccess)
        {
            return status;
        }
        if (config.smemBytes > static_cast<size_t>(optin))
        {
            return cudaErrorInvalidConfiguration;
        }
    }
    return cudaSuccess;
}

} // namespace

cudaError_t selectiveScanForward(SelectiveScanParams const& params, cudaStream_t stream)
{
    if (!isValid(params))
    {
        return cudaErrorInvalidValue;
    }
    ScanLaunchConfig config{};
    cudaError_t const status = makeConfig(params, config);
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
