// The forward selective-scan kernel, templated on the I/O type and the states per thread. Device code: included by
// selectiveScanTypedLaunch.cuh (and by the CPU emulation in tests/test_cuda_kernel.py, which is why it holds no
// launch syntax).
//
// Why this design. Per (b, d, n, t) the scan needs one exp and four FP32 operations (dt*A, dt*u*B, the state FMA,
// the C FMA); per (b, d, t) it moves only 6-16 bytes. For the model's shapes (N = 16, FP16) the SFU, which issues
// 16 exps per clock per SM against 128 FP32 operations, is the limit, above HBM bandwidth; so the kernel must spend
// no more than ~7 other instructions per exp. A parallel scan along L (mamba-ssm's BlockScan) costs a second pass
// over the items plus shuffle levels per state, ~10 instructions per exp. Instead each thread keeps G states of one
// channel in registers and walks L sequentially: a chunk of L (64 steps) is staged in shared memory with coalesced
// loads, then every thread reads its channel's dt and dt*u and its states' B and C rows with 128-bit loads
// (B and C are read once per block and shared by all channels of the tile, not once per channel as in mamba-ssm).
// The P = ceil(N / G) threads of one channel add their partial y with a recursive-halving reduce-scatter over
// 4 time steps (3 shuffles for P = 4), so y costs < 1 instruction per exp. Parallelism is (b, d, n / G), i.e.
// batch * dim * P threads; the launcher picks G = 4 when that fills the GPU and G = 2 (twice the threads) when the
// grid is small (batch 1), since for small grids latency, not issue slots, is the limit.
// Global rows start at arbitrary element offsets (any L), so global accesses are scalar but coalesced: per (b, d, t)
// element that traffic is amortised over N states, and a warp's 32 consecutive time steps fill whole sectors.
#pragma once

#include "selectiveScanForward.h"
#include "selectiveScanLaunchConfig.h"

#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cmath>
#include <cstdint>

namespace m2s2l
{
namespace scan_detail
{

constexpr float kLOG2E = 1.4426950408889634f;
constexpr unsigned kFULL_MASK = 0xffffffffu;

__device__ __forceinline__ float loadFloat(float const* p)
{
    return __ldg(p);
}

__device__ __forceinline__ float loadFloat(__half const* p)
{
    return __half2float(__ldg(p));
}

__device__ __forceinline__ void storeFloat(float* p, float v)
{
    *p = v;
}

__device__ __forceinline__ void storeFloat(__half* p, float v)
{
    *p = __float2half_rn(v);
}

// 2^x in one SFU instruction (MUFU.EX2); A is pre-scaled by log2(e), so exp(dt*A) = 2^(dt*A*log2e). Relative error
// ~2^-22, below FP32 rounding of the recurrence over L steps. Flushing denormals only affects exps below 2^-126.
__device__ __forceinline__ float exp2Approx(float x)
{
#if defined(__CUDA_ARCH__)
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
#else
    // Host pass of nvcc, and the CPU emulation of the kernel in tests/test_cuda_kernel.py.
    return exp2f(x);
#endif
}

// mamba-ssm's softplus: log1p(exp(x)) is accurate for small results, where log(1 + exp(x)) would lose them.
__device__ __forceinline__ float softplus(float x)
{
    return x <= 20.f ? log1pf(__expf(x)) : x;
}

__device__ __forceinline__ float silu(float x)
{
    // __fdividef returns 0 for denominators above 2^126, i.e. x < -87, where silu(x) underflows anyway.
    return __fdividef(x, 1.f + __expf(-x));
}

// Sums acc[0..3] (partial y of 4 consecutive steps) over the `lanes` threads of one channel and adds each total to
// yRow[0..3] from exactly one thread. Recursive halving: each exchange halves the values a thread still holds, so
// 4 lanes need 3 shuffles instead of the 8 of four butterfly all-reduces. `lanes` is uniform over the block, so
// every branch below is taken by whole warps and the full-mask shuffles are legal.
__device__ __forceinline__ void reduceScatterAdd(float const (&acc)[4], int32_t lanes, int32_t lane, float* yRow)
{
    if (lanes == 1)
    {
#pragma unroll
        for (int32_t i = 0; i < 4; ++i)
        {
            yRow[i] += acc[i];
        }
        return;
    }
    // Level 1: the upper half of each lane pair keeps steps 2, 3, the lower half steps 0, 1.
    int32_t m = lanes >> 1;
    bool const upper = (lane & m) != 0;
    float keep0 = upper ? acc[2] : acc[0];
    float keep1 = upper ? acc[3] : acc[1];
    float const send0 = upper ? acc[0] : acc[2];
    float const send1 = upper ? acc[1] : acc[3];
    keep0 += __shfl_xor_sync(kFULL_MASK, send0, m);
    keep1 += __shfl_xor_sync(kFULL_MASK, send1, m);
    int32_t const base = upper ? 2 : 0;
    if (lanes == 2)
    {
        yRow[base] += keep0;
        yRow[base + 1] += keep1;
        return;
    }
    // Level 2: one step per lane; further levels (lanes > 4) are plain butterfly sums of that one value.
    m >>= 1;
    bool const odd = (lane & m) != 0;
    float v = odd ? keep1 : keep0;
    v += __shfl_xor_sync(kFULL_MASK, odd ? keep0 : keep1, m);
    for (m >>= 1; m > 0; m >>= 1)
    {
        v += __shfl_xor_sync(kFULL_MASK, v, m);
    }
    if ((lane & ((lanes >> 2) - 1)) == 0)
    {
        yRow[base + (odd ? 1 : 0)] += v;
    }
}

// One block: batch b, group k, a tile of kTHREADS / P consecutive channels of that group, all of L. Thread
// (channel c, lane p) owns states n = g * P + p, g < kStates; interleaving n this way makes the P lanes of a channel
// read adjacent B/C rows, which kROW's padding maps to distinct banks.
template <typename T, int32_t kStates>
__global__ void __launch_bounds__(kTHREADS, kMIN_BLOCKS_PER_SM) selectiveScanFwdKernel(
    SelectiveScanParams const p, int32_t const lanesLog2, int32_t const tilesPerGroup)
{
    int32_t const lanes = 1 << lanesLog2;
    int32_t const tileChannels = kTHREADS >> lanesLog2;
    int32_t const paddedStates = kStates << lanesLog2;
    int32_t const dimPerGroup = p.dim / p.groups;
    int32_t const dstate = p.dstate;
    int64_t const seqlen = p.seqlen;

    int32_t const tile = static_cast<int32_t>(blockIdx.x) % tilesPerGroup;
    int32_t const groupBatch = static_cast<int32_t>(blockIdx.x) / tilesPerGroup;
    int32_t const group = groupBatch % p.groups;
    int32_t const batch = groupBatch / p.groups;
    int32_t const d0 = group * dimPerGroup + tile * tileChannels;
    int32_t const validChannels = min(tileChannels, dimPerGroup - tile * tileChannels);

    extern __shared__ float4 smemRaw[];
    float* const sDt = reinterpret_cast<float*>(smemRaw);
    float* const sDu = sDt + tileChannels * kROW;
    float* const sY = sDu + tileChannels * kROW;
    float* const sGate = sY + tileChannels * kROW;
    float* const sB = sGate + (p.z != nullptr ? tileChannels * kROW : 0);
    float* const sC = sB + paddedStates * kROW;

    int64_t const rowBase = (static_cast<int64_t>(batch) * p.dim + d0) * seqlen;
    T const* const u = static_cast<T const*>(p.u) + rowBase;
    T const* const delta = static_cast<T const*>(p.delta) + rowBase;
    T const* const z = p.z != nullptr ? static_cast<T const*>(p.z) + rowBase : nullptr;
    T* const y = static_cast<T*>(p.y) + rowBase;
    int64_t const bcBase = (static_cast<int64_t>(batch) * p.groups + group) * dstate * seqlen;
    T const* const Bg = static_cast<T const*>(p.B) + bcBase;
    T const* const Cg = static_cast<T const*>(p.C) + bcBase;

    int32_t const tid = static_cast<int32_t>(threadIdx.x);
    int32_t const channel = tid >> lanesLog2;
    int32_t const lane = tid & (lanes - 1);
    bool const channelValid = channel < validChannels;

    float a2[kStates];
    float h[kStates];
#pragma unroll
    for (int32_t g = 0; g < kStates; ++g)
    {
        int32_t const n = g * lanes + lane;
        // Padded states (n >= N) and channels past the group get A = 0 and B = C = 0: exp(0) = 1 keeps h = 0.
        a2[g] = (channelValid && n < dstate) ? __ldg(p.A + static_cast<int64_t>(d0 + channel) * dstate + n) * kLOG2E
                                             : 0.f;
        h[g] = 0.f;
    }
    float const* const dtRow = sDt + channel * kROW;
    float const* const duRow = sDu + channel * kROW;
    float* const yRow = sY + channel * kROW;

    for (int64_t t0 = 0; t0 < seqlen; t0 += kCHUNK)
    {
        int32_t const len = static_cast<int32_t>(min(static_cast<int64_t>(kCHUNK), seqlen - t0));
        // Steps past len (up to a multiple of 4) are staged as dt = 0, dt*u = 0: exp(0) = 1, so h passes unchanged.
        int32_t const steps = (len + 3) & ~3;

        // Staging. Each thread first issues kLOAD_BATCH independent loads per array, then uses them: a loop that
        // used each value right after loading it would pay one full memory latency per element.
        int32_t const stateElems = paddedStates * kCHUNK;
        for (int32_t e0 = tid; e0 < stateElems; e0 += kLOAD_BATCH * kTHREADS)
        {
            float bv[kLOAD_BATCH];
            float cv[kLOAD_BATCH];
#pragma unroll
            for (int32_t i = 0; i < kLOAD_BATCH; ++i)
            {
                int32_t const e = e0 + i * kTHREADS;
                int32_t const n = e >> kCHUNK_LOG2;
                int32_t const t = e & (kCHUNK - 1);
                bool const valid = e < stateElems && n < dstate && t < len;
                int64_t const off = n * seqlen + t0 + t;
                bv[i] = valid ? loadFloat(Bg + off) : 0.f;
                cv[i] = valid ? loadFloat(Cg + off) : 0.f;
            }
#pragma unroll
            for (int32_t i = 0; i < kLOAD_BATCH; ++i)
            {
                int32_t const e = e0 + i * kTHREADS;
                if (e < stateElems && (e & (kCHUNK - 1)) < steps)
                {
                    sB[(e >> kCHUNK_LOG2) * kROW + (e & (kCHUNK - 1))] = bv[i];
                    sC[(e >> kCHUNK_LOG2) * kROW + (e & (kCHUNK - 1))] = cv[i];
                }
            }
        }
        // dt, dt*u, D*u (the start of y) and the gate, computed once per (d, t) rather than once per state.
        int32_t const channelElems = tileChannels * kCHUNK;
        for (int32_t e0 = tid; e0 < channelElems; e0 += kLOAD_BATCH * kTHREADS)
        {
            float uv[kLOAD_BATCH];
            float dv[kLOAD_BATCH];
            float zv[kLOAD_BATCH];
#pragma unroll
            for (int32_t i = 0; i < kLOAD_BATCH; ++i)
            {
                int32_t const e = e0 + i * kTHREADS;
                int32_t const c = e >> kCHUNK_LOG2;
                int32_t const t = e & (kCHUNK - 1);
                bool const valid = e < channelElems && c < validChannels && t < len;
                int64_t const off = c * seqlen + t0 + t;
                uv[i] = valid ? loadFloat(u + off) : 0.f;
                dv[i] = valid ? loadFloat(delta + off) : 0.f;
                zv[i] = valid && z != nullptr ? loadFloat(z + off) : 0.f;
            }
#pragma unroll
            for (int32_t i = 0; i < kLOAD_BATCH; ++i)
            {
                int32_t const e = e0 + i * kTHREADS;
                int32_t const c = e >> kCHUNK_LOG2;
                int32_t const t = e & (kCHUNK - 1);
                if (e >= channelElems || t >= steps)
                {
                    continue;
                }
                float dt = 0.f;
                float du = 0.f;
                float y0 = 0.f;
                float gate = 0.f;
                if (c < validChannels && t < len)
                {
                    dt = dv[i] + (p.deltaBias != nullptr ? __ldg(p.deltaBias + d0 + c) : 0.f);
                    if (p.deltaSoftplus)
                    {
                        dt = softplus(dt);
                    }
                    du = dt * uv[i];
                    y0 = p.D != nullptr ? __ldg(p.D + d0 + c) * uv[i] : 0.f;
                    gate = z != nullptr ? silu(zv[i]) : 0.f;
                }
                sDt[c * kROW + t] = dt;
                sDu[c * kROW + t] = du;
                sY[c * kROW + t] = y0;
                if (z != nullptr)
                {
                    sGate[c * kROW + t] = gate;
                }
            }
        }
        __syncthreads();

        for (int32_t t = 0; t < steps; t += 4)
        {
            float4 const dt4 = *reinterpret_cast<float4 const*>(dtRow + t);
            float4 const du4 = *reinterpret_cast<float4 const*>(duRow + t);
            float const dtv[4] = {dt4.x, dt4.y, dt4.z, dt4.w};
            float const duv[4] = {du4.x, du4.y, du4.z, du4.w};
            float acc[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
            for (int32_t g = 0; g < kStates; ++g)
            {
                int32_t const row = (g * lanes + lane) * kROW + t;
                float4 const b4 = *reinterpret_cast<float4 const*>(sB + row);
                float4 const c4 = *reinterpret_cast<float4 const*>(sC + row);
                float const bv[4] = {b4.x, b4.y, b4.z, b4.w};
                float const cv[4] = {c4.x, c4.y, c4.z, c4.w};
#pragma unroll
                for (int32_t i = 0; i < 4; ++i)
                {
                    h[g] = fmaf(exp2Approx(dtv[i] * a2[g]), h[g], duv[i] * bv[i]);
                    acc[i] = fmaf(cv[i], h[g], acc[i]);
                }
            }
            reduceScatterAdd(acc, lanes, lane, yRow + t);
        }
        __syncthreads();

        for (int32_t e = tid; e < tileChannels * kCHUNK; e += kTHREADS)
        {
            int32_t const c = e >> kCHUNK_LOG2;
            int32_t const t = e & (kCHUNK - 1);
            if (c < validChannels && t < len)
            {
                float v = sY[c * kROW + t];
                if (z != nullptr)
                {
                    v *= sGate[c * kROW + t];
                }
                storeFloat(y + c * seqlen + t0 + t, v);
            }
        }
        // The next chunk overwrites the tiles this chunk's output loop still reads.
        __syncthreads();
    }

    if (p.lastState != nullptr && channelValid)
    {
        float* const last = p.lastState + (static_cast<int64_t>(batch) * p.dim + d0 + channel) * dstate;
#pragma unroll
        for (int32_t g = 0; g < kStates; ++g)
        {
            int32_t const n = g * lanes + lane;
            if (n < dstate)
            {
                last[n] = h[g];
            }
        }
    }
}

} // namespace scan_detail
} // namespace m2s2l
