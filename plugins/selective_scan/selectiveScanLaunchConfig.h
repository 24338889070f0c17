// Launch configuration of the forward selective-scan kernel: the tile sizes, the kernel variant (states per thread)
// and the grid, computed from the problem shape and two device limits. Plain C++17 with no CUDA dependency, so that
// the launcher (selectiveScanForward.cu) and the CPU tests (tests/test_cuda_kernel.py: the emulation of the kernel and
// a g++-built harness) run the very same code: a wrong grid fails on a machine without a GPU.
#pragma once

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
constexpr int32_t kMAX_DSTATE = 256;
constexpr int32_t kMAX_LANES_LOG2 = 5; // the lanes of one channel must sit in one warp for the shuffles
// Warps per SM below which the launcher trades issue efficiency (G = 4) for twice the threads (G = 2): with fewer
// than two warps per scheduler the SFU and shared-memory latencies are no longer hidden.
constexpr int64_t kMIN_WARPS_PER_SM = 8;

// What the configuration depends on: the problem's shape, not its data.
struct ScanShape
{
    int32_t batch;
    int32_t dim;             // K * D channels
    int32_t groups;          // K; dim % groups == 0
    int32_t dstate;          // N
    bool hasZ;               // the SiLU gate needs one more shared-memory row per channel
    int32_t statesPerThread; // 0: choose; 2, 4 or 8: that variant
};

// The device limits the choice needs (cudaDevAttrMultiProcessorCount, cudaDevAttrMaxSharedMemoryPerBlockOptin).
struct ScanDeviceLimits
{
    int32_t smCount;
    size_t maxSmemOptin;
};

struct ScanLaunchConfig
{
    int32_t statesPerThread; // G: states each thread keeps in registers (2, 4 or 8)
    int32_t lanesLog2;       // log2(P): P threads share one channel's states, P * G >= dstate, P <= 32
    int32_t tilesPerGroup;   // channel tiles of kTHREADS / P channels per group
    int32_t numBlocks;       // batch * groups * tilesPerGroup
    size_t smemBytes;        // dynamic shared memory per block
};

enum class ScanConfigStatus : int32_t
{
    kOK = 0,
    kINVALID_SHAPE = 1,     // a parameter outside the kernel's contract
    kTOO_MUCH_SMEM = 2,     // the tile needs more shared memory than the device allows per block
    kGRID_TOO_LARGE = 3,    // more blocks than a 1-D grid launch takes
};

inline int32_t ceilLog2(int32_t x)
{
    int32_t r = 0;
    while ((int32_t{1} << r) < x)
    {
        ++r;
    }
    return r;
}

// log2 of the lanes per channel for `states` states per thread, or -1 when that would need more than one warp.
inline int32_t lanesLog2For(int32_t dstate, int32_t states)
{
    int32_t const log2 = ceilLog2((dstate + states - 1) / states);
    return log2 <= kMAX_LANES_LOG2 ? log2 : -1;
}

inline bool isValidShape(ScanShape const& s)
{
    if (s.batch < 1 || s.dim < 1 || s.groups < 1 || s.dim % s.groups != 0 || s.dstate < 1 || s.dstate > kMAX_DSTATE)
    {
        return false;
    }
    if (s.statesPerThread != 0 && s.statesPerThread != 2 && s.statesPerThread != 4 && s.statesPerThread != 8)
    {
        return false;
    }
    return s.statesPerThread == 0 || lanesLog2For(s.dstate, s.statesPerThread) >= 0;
}

// Whether the configuration of `shape` depends on the device's SM count (a chosen variant with N <= 64).
inline bool needsSmCount(ScanShape const& s)
{
    return s.statesPerThread == 0 && s.dstate <= 64;
}

// Shared-memory floats one block uses: dt, dt*u, y (and the SiLU gate when z is given) for each channel of the tile,
// and B, C for each (padded) state, all kROW wide.
inline size_t scanSmemBytes(int32_t lanesLog2, int32_t statesPerThread, bool hasZ)
{
    size_t const tileChannels = static_cast<size_t>(kTHREADS >> lanesLog2);
    size_t const paddedStates = static_cast<size_t>(statesPerThread) << lanesLog2;
    size_t const channelRows = (hasZ ? 4 : 3) * tileChannels;
    return (channelRows + 2 * paddedStates) * kROW * sizeof(float);
}

// The kernel variant: G = 4 when batch * dim * P(G = 4) fills every SM with kMIN_WARPS_PER_SM warps, else G = 2
// (twice the threads for small grids); N > 64 takes G = 4 where one warp's lanes suffice, else G = 8.
inline int32_t chooseStatesPerThread(ScanShape const& s, ScanDeviceLimits const& limits)
{
    if (s.statesPerThread != 0)
    {
        return s.statesPerThread;
    }
    if (s.dstate > 64)
    {
        return lanesLog2For(s.dstate, 4) >= 0 ? 4 : 8;
    }
    int64_t const warpsWithG4 = (static_cast<int64_t>(s.batch) * s.dim << lanesLog2For(s.dstate, 4)) / 32;
    return warpsWithG4 >= kMIN_WARPS_PER_SM * limits.smCount ? 4 : 2;
}

inline ScanConfigStatus makeLaunchConfig(ScanShape const& s, ScanDeviceLimits const& limits, ScanLaunchConfig& config)
{
    if (!isValidShape(s))
    {
        return ScanConfigStatus::kINVALID_SHAPE;
    }
    int32_t const states = chooseStatesPerThread(s, limits);
    config.statesPerThread = states;
    config.lanesLog2 = lanesLog2For(s.dstate, states);
    int32_t const tileChannels = kTHREADS >> config.lanesLog2;
    int32_t const dimPerGroup = s.dim / s.groups;
    config.tilesPerGroup = (dimPerGroup + tileChannels - 1) / tileChannels; // ceil: the last tile may be partial
    int64_t const blocks = static_cast<int64_t>(s.batch) * s.groups * config.tilesPerGroup;
    if (blocks > INT32_MAX)
    {
        return ScanConfigStatus::kGRID_TOO_LARGE;
    }
    config.numBlocks = static_cast<int32_t>(blocks);
    config.smemBytes = scanSmemBytes(config.lanesLog2, states, s.hasZ);
    // Only large N (> 64) needs the opt-in shared memory; refuse rather than fail inside the launch.
    if (config.smemBytes > kDEFAULT_SMEM_BYTES && config.smemBytes > limits.maxSmemOptin)
    {
        return ScanConfigStatus::kTOO_MUCH_SMEM;
    }
    return ScanConfigStatus::kOK;
}

} // namespace scan_detail
} // namespace m2s2l
