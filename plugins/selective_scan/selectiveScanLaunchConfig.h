// Internal interface between the launcher (selectiveScanForward.cu) and the per-dtype kernel instantiations
// (selectiveScanKernelFp32.cu, selectiveScanKernelFp16.cu). Host-only: no device code, no TensorRT.
#pragma once

#include "selectiveScanForward.h"

#include <cuda_runtime_api.h>
#include <cstddef>
#include <cstdint>

namespace m2s2l
{
namespace scan_detail
{

// Threads per block. Four warps keep a block small enough for 4-5 resident blocks per SM (so one block's global
// loads overlap other blocks' arithmetic) while a tile still covers 8-32 channels.
constexpr int32_t kTHREADS = 128;
// Register budget hint for ptxas: 4 blocks of 128 threads allow 128 registers per thread, enough for G = 4 without
// spills, and 16 warps per SM to hide latency (the shared-memory tiles also allow 4-6 blocks per SM).
constexpr int32_t kMIN_BLOCKS_PER_SM = 4;
// Time steps staged in shared memory per iteration: a power of two so the index arithmetic is shifts.
constexpr int32_t kCHUNK_LOG2 = 6;
constexpr int32_t kCHUNK = 1 << kCHUNK_LOG2;
// Global loads each thread keeps in flight while staging a chunk (per array).
constexpr int32_t kLOAD_BATCH = 8;
// Row pitch of the shared-memory tiles, in floats. +4 keeps rows 16-byte aligned for float4 reads and shifts
// consecutive rows by 4 banks, so the 8 rows one quarter-warp reads with 128-bit loads hit distinct banks.
constexpr int32_t kROW = kCHUNK + 4;
// The kernel's default dynamic shared-memory ceiling; larger tiles need cudaFuncAttributeMaxDynamicSharedMemorySize.
constexpr size_t kDEFAULT_SMEM_BYTES = 48 * 1024;

struct ScanLaunchConfig
{
    int32_t statesPerThread;  // G: states each thread keeps in registers (2, 4 or 8)
    int32_t lanesLog2;        // log2(P): P threads share one channel's states, P * G >= dstate, P <= 32
    int32_t tilesPerGroup;    // channel tiles of kTHREADS / P channels per group
    int32_t numBlocks;        // batch * groups * tilesPerGroup
    size_t smemBytes;         // dynamic shared memory per block
};

// Shared-memory floats one block uses: dt, dt*u, y (and the SiLU gate when z is given) for each channel of the tile,
// and B, C for each (padded) state, all kROW wide.
inline size_t scanSmemBytes(int32_t lanesLog2, int32_t statesPerThread, bool hasZ)
{
    size_t const tileChannels = static_cast<size_t>(kTHREADS >> lanesLog2);
    size_t const paddedStates = static_cast<size_t>(statesPerThread) << lanesLog2;
    size_t const channelRows = (hasZ ? 4 : 3) * tileChannels;
    return (channelRows + 2 * paddedStates) * kROW * sizeof(float);
}

// Launch the instantiation for the dtype with config.statesPerThread; parameters are already validated.
cudaError_t launchSelectiveScanFp32(SelectiveScanParams const& params, ScanLaunchConfig const& config,
    cudaStream_t stream);
cudaError_t launchSelectiveScanFp16(SelectiveScanParams const& params, ScanLaunchConfig const& config,
    cudaStream_t stream);

} // namespace scan_detail
} // namespace m2s2l
