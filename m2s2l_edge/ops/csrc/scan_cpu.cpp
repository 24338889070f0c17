// Selective scan (mamba-ssm semantics, docs/DESIGN.md §4) on the CPU: forward and backward, float and double, behind a
// plain C ABI that m2s2l_edge/ops/cpu_kernel.py loads with ctypes. No PyTorch or Python headers: the library builds
// in a few seconds with g++ -O3 -march=native -fno-trapping-math -fopenmp on the machine that runs it.
//
// For batch b, channel d (of dim = K*D channels, group k = d / (dim / K)), state n:
//   dt_t = softplus(delta_t + delta_bias[d])   if softplus, else delta_t + delta_bias[d]
//   h_t  = exp(dt_t * A[d, n]) * h_{t-1} + dt_t * u_t * B[b, k, t, n]        (h_{-1} = 0)
//   y_t  = sum_n C[b, k, t, n] * h_t[n] + D[d] * u_t
//   y_t *= silu(z_t)                            if z != nullptr
// Layouts (all contiguous, row-major, one dtype T for every array):
//   u, delta, z, y, dy and their gradients : (batch, dim, seqlen)
//   A, dA                                  : (dim, dstate)
//   Bt, Ct, dBt, dCt                       : (batch, groups, seqlen, dstate)   B and C transposed: the N states of
//                                            step t are contiguous, so the n loop is a unit-stride vector loop
//   D, delta_bias and their gradients      : (dim,)
//   last_state, dlast_state                : (batch, dim, dstate)
// Optional inputs (D, z, delta_bias, last_state, dlast_state) may be nullptr; a gradient pointer must be given
// exactly when its input is.
//
// Two kernels implement it. PortableKernel (any T, any N, plain C++ that gcc auto-vectorises) is the readable one
// and the path of CPUs without AVX2. Avx2Kernel (float, N = 8, 16 or 32) is the fast one: intrinsics, because gcc
// keeps IEEE order in the per-step sum over n and emits serial scalar adds there, and because interleaving the
// exponentials of several steps by hand is what keeps the FMA units busy (~2x on the forward pass).
// Numerics: the state and every sum are in T; exp, log1p and sigmoid for float are our own branch-free versions
// (within 3 ulp of libm's on the normal range, NaN/inf preserved; the AVX2 exp flushes results below FLT_MIN to 0),
// libm's for double. No -ffast-math: NaN and inf must propagate as in the reference.
//
// Parallelism: one (b, d) channel is a sequential scan over L with its N states in registers; OpenMP spreads the
// channels over threads (dynamically: on a shared machine no thread waits for a descheduled one). The backward
// pass hands out blocks of whole channels d (all b), so dA, dD and d(delta_bias) of a channel have one writer,
// and accumulates dB, dC (sums over the channels of a group) per block, reduced in a fixed order afterwards: the
// gradients are bitwise reproducible, whatever the thread count.
//
// Every exported function is noexcept and returns a status code (0 = success); see m2s2l_scan_status_string.

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <type_traits>
#include <vector>

// M2S2L_SCAN_PORTABLE_ONLY builds the portable kernel alone (the path of CPUs without AVX2, e.g. a Jetson's ARM
// cores), so that x86 machines can test it too.
#if defined(__AVX2__) && defined(__FMA__) && !defined(M2S2L_SCAN_PORTABLE_ONLY)
#include <immintrin.h>
#define M2S2L_SCAN_AVX2 1
#else
#define M2S2L_SCAN_AVX2 0
#endif

#define M2S2L_API extern "C" __attribute__((visibility("default")))

namespace m2s2l
{
namespace
{

// Bumped whenever an exported signature changes; cpu_kernel.py refuses a library with another value.
constexpr int kABI_VERSION = 1;

enum Status : int
{
    kOK = 0,
    kBAD_ARGUMENT = 1,
    kOUT_OF_MEMORY = 2,
    kINTERNAL_ERROR = 3,
};

// Steps whose exp(dt * A) the portable forward kernel computes in one vector loop before the recurrence uses
// them: 64 steps of N = 16 floats are 4 KiB, which stay in L1 between the two loops.
constexpr int64_t kCHUNK = 64;

// Scratch arrays start on 128-byte boundaries (whole cache lines), and rows of L steps have room for whole
// blocks of the AVX2 kernel's 32-step discretisation.
constexpr int64_t roundUp(int64_t n)
{
    return (n + 31) / 32 * 32;
}

// ---------------------------------------------------------------------------------------------------------------
// Elementwise math. Float versions are branch-free and inline so gcc vectorises the loops that call them (libm's
// expf/log1pf are scalar calls without -ffast-math, which we avoid for its NaN/inf semantics); double versions are
// libm's, since double is the checking path, not the fast one.

inline float bitsToFloat(int32_t i)
{
    float f;
    std::memcpy(&f, &i, sizeof(f));
    return f;
}

// exp for float: Cephes' expf (about 1 ulp on the normal range). x = n*ln2 + r with |r| <= ln2/2, e^r by a
// degree-7 polynomial, 2^n built in the exponent bits. 2^n is applied as two halves so that every n in
// [-150, 128] gives a normal scale factor: results underflow gradually to 0 and overflow to inf like expf.
inline float expApprox(float x)
{
    float xc = x < -104.0F ? -104.0F : x; // exp(-104) rounds to 0, exp(89) to inf: nothing is lost by clamping
    xc = xc > 89.0F ? 89.0F : xc;
    // Round to nearest integer by adding 1.5 * 2^23 (exact for |x * log2(e)| < 2^22).
    float const nf = (xc * 1.44269504088896341F + 12582912.0F) - 12582912.0F;
    // ln2 split in a part with few mantissa bits (exact product) and a correction (Cody-Waite).
    float const r = (xc - nf * 0.693359375F) - nf * -2.12194440e-4F;
    float p = 1.9875691500e-4F;
    p = p * r + 1.3981999507e-3F;
    p = p * r + 8.3334519073e-3F;
    p = p * r + 4.1665795894e-2F;
    p = p * r + 1.6666665459e-1F;
    p = p * r + 5.0000001201e-1F;
    p = p * r * r + r + 1.0F;
    int32_t const n = static_cast<int32_t>(nf);
    int32_t const n1 = n >> 1;
    int32_t const n2 = n - n1;
    float const res = p * bitsToFloat((n1 + 127) << 23) * bitsToFloat((n2 + 127) << 23);
    return x != x ? x : res; // NaN in, NaN out (the clamps above would have turned it into a number)
}

inline double expApprox(double x)
{
    return std::exp(x);
}

// log1p on [0, 1] for float, Cephes' logf polynomial: below 1 + e = sqrt(2) the reduced argument is e itself
// (exact, so tiny e keep full relative precision); above, log1p(e) = ln2 + log1p((e - 1) / 2).
inline float log1pUnit(float e)
{
    bool const hi = e >= 0.41421356F;
    float const f = hi ? (e - 1.0F) * 0.5F : e;
    float const ex = hi ? 1.0F : 0.0F;
    float const z = f * f;
    float y = 7.0376836292e-2F;
    y = y * f - 1.1514610310e-1F;
    y = y * f + 1.1676998740e-1F;
    y = y * f - 1.2420140846e-1F;
    y = y * f + 1.4249322787e-1F;
    y = y * f - 1.6668057665e-1F;
    y = y * f + 2.0000714765e-1F;
    y = y * f - 2.4999993993e-1F;
    y = y * f + 3.3333331174e-1F;
    y = y * f * z;
    y += -2.12194440e-4F * ex; // ln2 = 0.693359375 - 2.12194440e-4, the big part added last
    y += -0.5F * z;
    return (f + y) + 0.693359375F * ex;
}

// torch.nn.functional.softplus (beta 1, threshold 20): x above the threshold is returned unchanged. Below it,
// max(x, 0) + log1p(exp(-|x|)) equals log1p(exp(x)) without overflowing for large x.
inline float softplus(float x)
{
    float const ax = x < 0.0F ? -x : x;
    float const sp = (x > 0.0F ? x : 0.0F) + log1pUnit(expApprox(-ax));
    return x > 20.0F ? x : sp;
}

inline double softplus(double x)
{
    return x > 20.0 ? x : std::log1p(std::exp(x)); // torch's own formula, so float64 checks can be tight
}

template <typename T>
inline T sigmoid(T x)
{
    return T(1) / (T(1) + expApprox(-x));
}

// d softplus / dx, with torch's threshold (exactly 1 above 20).
template <typename T>
inline T softplusGrad(T x)
{
    return x > T(20) ? T(1) : sigmoid(x);
}

// ---------------------------------------------------------------------------------------------------------------

#if M2S2L_SCAN_AVX2
// Eight-lane float math for the AVX2 kernel. Exponentials are evaluated several vectors at a time, stage by stage:
// one exp is a ~15-deep dependency chain, and a single chain per step left the recurrence latency-bound.
namespace avx2
{

// 2^(j/8), j = 0..7, as float bit patterns (each correctly rounded).
alignas(32) constexpr int32_t kEXP2_EIGHTHS[8]
    = {0x3f800000, 0x3f8b95c2, 0x3f9837f0, 0x3fa5fed7, 0x3fb504f3, 0x3fc5672a, 0x3fd744fd, 0x3feac0c7};

// exp of M vectors in place, computed four at a time stage by stage. x = (8m + j) ln2/8 + r with |r| <= ln2/16, so
// e^x = 2^m * 2^(j/8) * e^r: a table lookup (vpermd) and a degree-4 polynomial, fewer multiplies than
// expApprox's degree-7 one. At most 1.6 ulp from expf on [-87.3, 88.6]; results below FLT_MIN flush to 0 and
// x >= 88.66 gives inf (expf overflows at 88.72); NaN propagates.
template <int M>
inline void expBatch(__m256* x)
{
    constexpr int kG = M < 4 ? M : 4; // independent chains interleaved
    static_assert(M % kG == 0, "M must be 1, 2 or a multiple of 4");
    __m256 const lo = _mm256_set1_ps(-87.3365479F); // ln(FLT_MIN)
    __m256 const hi = _mm256_set1_ps(88.7228394F);  // ln(FLT_MAX)
    __m256 const magic = _mm256_set1_ps(12582912.0F); // 1.5 * 2^23: adding it rounds to an integer in the low bits
    __m256i const table = _mm256_load_si256(reinterpret_cast<__m256i const*>(kEXP2_EIGHTHS));
    for (int i0 = 0; i0 < M; i0 += kG)
    {
        __m256 k[kG];
        __m256 r[kG];
        for (int i = 0; i < kG; ++i)
        {
            // Operand order makes min/max return x when it is NaN.
            __m256 const xc = _mm256_min_ps(hi, _mm256_max_ps(lo, x[i0 + i]));
            k[i] = _mm256_fmadd_ps(xc, _mm256_set1_ps(11.5415603271F), magic); // 8 / ln2
            __m256 const kf = _mm256_sub_ps(k[i], magic);
            // ln2 / 8 split in a part with 9 significant bits (exact product with kf) and a correction.
            r[i] = _mm256_fnmadd_ps(kf, _mm256_set1_ps(0.086669921875F), xc);
            r[i] = _mm256_fnmadd_ps(kf, _mm256_set1_ps(-2.65243048e-5F), r[i]);
        }
        for (int i = 0; i < kG; ++i)
        {
            __m256 p = _mm256_fmadd_ps(_mm256_set1_ps(1.0F / 24.0F), r[i], _mm256_set1_ps(1.0F / 6.0F));
            p = _mm256_fmadd_ps(p, r[i], _mm256_set1_ps(0.5F));
            p = _mm256_fmadd_ps(p, r[i], _mm256_set1_ps(1.0F));
            p = _mm256_fmadd_ps(p, r[i], _mm256_set1_ps(1.0F));
            // The low bits of k hold 8m + j (two's complement): j indexes the table, m goes into the exponent.
            __m256i const ki = _mm256_castps_si256(k[i]);
            __m256i const frac = _mm256_permutevar8x32_epi32(table, ki);
            __m256i const scale
                = _mm256_add_epi32(frac, _mm256_slli_epi32(_mm256_and_si256(ki, _mm256_set1_epi32(~7)), 20));
            __m256 const res = _mm256_mul_ps(p, _mm256_castsi256_ps(scale));
            x[i0 + i] = _mm256_and_ps(res, _mm256_cmp_ps(x[i0 + i], lo, _CMP_NLT_UQ)); // underflow (not NaN) -> 0
        }
    }
}

// log1p on [0, 1]: log1pUnit, lane-wise.
inline __m256 log1pUnit8(__m256 e)
{
    __m256 const hi = _mm256_cmp_ps(e, _mm256_set1_ps(0.41421356F), _CMP_GE_OQ);
    __m256 const half = _mm256_mul_ps(_mm256_sub_ps(e, _mm256_set1_ps(1.0F)), _mm256_set1_ps(0.5F));
    __m256 const f = _mm256_blendv_ps(e, half, hi);
    __m256 const ex = _mm256_and_ps(hi, _mm256_set1_ps(1.0F));
    __m256 const z = _mm256_mul_ps(f, f);
    __m256 y = _mm256_set1_ps(7.0376836292e-2F);
    y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(-1.1514610310e-1F));
    y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(1.1676998740e-1F));
    y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(-1.2420140846e-1F));
    y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(1.4249322787e-1F));
    y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(-1.6668057665e-1F));
    y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(2.0000714765e-1F));
    y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(-2.4999993993e-1F));
    y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(3.3333331174e-1F));
    y = _mm256_mul_ps(_mm256_mul_ps(y, f), z);
    y = _mm256_fmadd_ps(ex, _mm256_set1_ps(-2.12194440e-4F), y);
    y = _mm256_fmadd_ps(z, _mm256_set1_ps(-0.5F), y);
    return _mm256_fmadd_ps(ex, _mm256_set1_ps(0.693359375F), _mm256_add_ps(f, y));
}

// softplus with torch's threshold 20, over M vectors in place (see softplus).
template <int M>
inline void softplusBatch(__m256* x)
{
    __m256 e[M];
    for (int i = 0; i < M; ++i)
    {
        e[i] = _mm256_or_ps(x[i], _mm256_set1_ps(-0.0F)); // -|x|
    }
    expBatch<M>(e);
    for (int i = 0; i < M; ++i)
    {
        __m256 const sp = _mm256_add_ps(_mm256_max_ps(x[i], _mm256_setzero_ps()), log1pUnit8(e[i])); // NaN: 0 + NaN
        x[i] = _mm256_blendv_ps(sp, x[i], _mm256_cmp_ps(x[i], _mm256_set1_ps(20.0F), _CMP_GT_OQ));
    }
}

// d softplus / dx = sigmoid(x) over M vectors in place, exactly 1 above the threshold like torch.
template <int M>
inline void softplusGradBatch(__m256* x)
{
    __m256 e[M];
    for (int i = 0; i < M; ++i)
    {
        e[i] = _mm256_sub_ps(_mm256_setzero_ps(), x[i]);
    }
    expBatch<M>(e);
    __m256 const one = _mm256_set1_ps(1.0F);
    for (int i = 0; i < M; ++i)
    {
        __m256 const s = _mm256_div_ps(one, _mm256_add_ps(one, e[i]));
        x[i] = _mm256_blendv_ps(s, one, _mm256_cmp_ps(x[i], _mm256_set1_ps(20.0F), _CMP_GT_OQ));
    }
}

inline float hsum(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// result[j] = hsum(p[j]) for j < 8.
inline __m256 hsum8(__m256 const* p)
{
    __m256 const t0 = _mm256_hadd_ps(p[0], p[1]); // p0 pairs, p1 pairs (per 128-bit half)
    __m256 const t1 = _mm256_hadd_ps(p[2], p[3]);
    __m256 const t2 = _mm256_hadd_ps(p[4], p[5]);
    __m256 const t3 = _mm256_hadd_ps(p[6], p[7]);
    __m256 const u0 = _mm256_hadd_ps(t0, t1); // [p0..p3 low-half sums | p0..p3 high-half sums]
    __m256 const u1 = _mm256_hadd_ps(t2, t3); // the same for p4..p7
    return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

} // namespace avx2
#endif

// ---------------------------------------------------------------------------------------------------------------
// Arguments and per-channel stages shared by the portable and the AVX2 kernels.

template <typename T>
struct ScanArgs
{
    T const* u;
    T const* delta;
    T const* A;
    T const* Bt;
    T const* Ct;
    T const* D;         // nullable
    T const* z;         // nullable
    T const* deltaBias; // nullable
    bool softplus;
    int64_t batch;
    int64_t dim;
    int64_t groups;
    int64_t dstate;
    int64_t seqlen;
};

template <typename T>
struct ScanGrads
{
    T const* dy;
    T const* dlastState; // nullable: no gradient flows into the last state
    T* du;
    T* ddelta;
    T* dA;
    T* dBt;
    T* dCt;
    T* dD;         // iff D
    T* dz;         // iff z
    T* ddeltaBias; // iff deltaBias
};

// Where one (b, d) channel's data lives.
template <typename T>
struct Channel
{
    int64_t row;   // offset of the channel in the (batch, dim, seqlen) arrays
    int64_t group; // offset of its group in the (batch, groups, seqlen, dstate) arrays
    int64_t state; // offset of the channel in the (batch, dim, dstate) arrays
    T bias;
    T skip;
};

template <typename T>
Channel<T> channelOf(ScanArgs<T> const& a, int64_t b, int64_t d)
{
    int64_t const k = d / (a.dim / a.groups);
    return {(b * a.dim + d) * a.seqlen, (b * a.groups + k) * a.seqlen * a.dstate, (b * a.dim + d) * a.dstate,
        a.deltaBias != nullptr ? a.deltaBias[d] : T(0), a.D != nullptr ? a.D[d] : T(0)};
}

// Per-thread scratch of the forward pass.
template <typename T>
struct ForwardWork
{
    T* dt;    // (L,)
    T* dtu;   // (L,)
    T* decay; // (kCHUNK, N) exp(dt * A) of a chunk of steps (portable kernel)
    T* state; // (N,) (portable kernel with a run-time N)

    ForwardWork(T* w, int64_t L, int64_t N)
        : dt(w)
        , dtu(dt + roundUp(L))
        , decay(dtu + roundUp(L))
        , state(decay + roundUp(kCHUNK * N))
    {
    }

    static int64_t size(int64_t L, int64_t N)
    {
        return 2 * roundUp(L) + roundUp(kCHUNK * N) + roundUp(N);
    }
};

// Per-thread scratch of the backward pass: the recomputed forward pass of one channel, about 2 * L * N values
// (128 KiB at L = 1024, N = 16: it stays in L2).
template <typename T>
struct BackwardWork
{
    T* dt;     // (L,)
    T* dtu;    // (L,)
    T* dtGrad; // (L,) softplus'(delta + bias)
    T* yPre;   // (L,) output before the skip term and the gate
    T* dout;   // (L,) gradient of the output before the gate
    T* decay;  // (L, N) exp(dt * A)
    T* hs;     // (L + 1, N) states; hs[0] = h_{-1} = 0, hs[t + 1] = h_t
    T* adj;    // (N,) adjoint state (portable kernel with a run-time N)

    BackwardWork(T* w, int64_t L, int64_t N)
        : dt(w)
        , dtu(dt + roundUp(L))
        , dtGrad(dtu + roundUp(L))
        , yPre(dtGrad + roundUp(L))
        , dout(yPre + roundUp(L))
        , decay(dout + roundUp(L))
        , hs(decay + roundUp(L * N))
        , adj(hs + roundUp((L + 1) * N))
    {
    }

    static int64_t size(int64_t L, int64_t N)
    {
        return 5 * roundUp(L) + roundUp(L * N) + roundUp((L + 1) * N) + roundUp(N);
    }
};

// dt = softplus(delta + bias) (or delta + bias) and dt * u for one channel; also d dt / d(delta + bias) when asked.
template <typename T>
void discretize(ScanArgs<T> const& a, T const* __restrict__ delta, T const* __restrict__ u, T bias,
    T* __restrict__ dt, T* __restrict__ dtu, T* __restrict__ dtGrad)
{
    int64_t const L = a.seqlen;
    if (a.softplus)
    {
#pragma omp simd
        for (int64_t t = 0; t < L; ++t)
        {
            T const x = delta[t] + bias;
            dt[t] = softplus(x);
            dtu[t] = dt[t] * u[t];
        }
        if (dtGrad != nullptr)
        {
#pragma omp simd
            for (int64_t t = 0; t < L; ++t)
            {
                dtGrad[t] = softplusGrad(delta[t] + bias);
            }
        }
    }
    else
    {
#pragma omp simd
        for (int64_t t = 0; t < L; ++t)
        {
            dt[t] = delta[t] + bias;
            dtu[t] = dt[t] * u[t];
        }
    }
}

// y = (y + D u) * silu(z), in place over one channel's row.
template <typename T>
void skipAndGate(ScanArgs<T> const& a, Channel<T> const& ch, T* __restrict__ y)
{
    int64_t const L = a.seqlen;
    T const* __restrict__ u = a.u + ch.row;
    if (a.z != nullptr)
    {
        T const* __restrict__ z = a.z + ch.row;
#pragma omp simd
        for (int64_t t = 0; t < L; ++t)
        {
            y[t] = (y[t] + ch.skip * u[t]) * (z[t] * sigmoid(z[t]));
        }
    }
    else if (a.D != nullptr)
    {
#pragma omp simd
        for (int64_t t = 0; t < L; ++t)
        {
            y[t] += ch.skip * u[t];
        }
    }
}

// Backward through the gate and the skip term: writes dout (gradient of the scan's own output), dz, and
// du = dout * D (the scan adds its part later); returns this channel's contribution to dD.
template <typename T>
T gateBackward(ScanArgs<T> const& a, ScanGrads<T> const& g, Channel<T> const& ch, T const* __restrict__ yPre,
    T* __restrict__ dout)
{
    int64_t const L = a.seqlen;
    T const* __restrict__ u = a.u + ch.row;
    T const* __restrict__ dy = g.dy + ch.row;
    T* __restrict__ du = g.du + ch.row;
    T dD = T(0);
    if (a.z != nullptr)
    {
        T const* __restrict__ z = a.z + ch.row;
        T* __restrict__ dz = g.dz + ch.row;
#pragma omp simd reduction(+ : dD)
        for (int64_t t = 0; t < L; ++t)
        {
            T const s = sigmoid(z[t]);
            T const out = yPre[t] + ch.skip * u[t];
            dz[t] = dy[t] * out * s * (T(1) + z[t] * (T(1) - s)); // silu'(z) = s (1 + z (1 - s))
            dout[t] = dy[t] * z[t] * s;
            du[t] = dout[t] * ch.skip;
            dD += dout[t] * u[t];
        }
    }
    else
    {
#pragma omp simd reduction(+ : dD)
        for (int64_t t = 0; t < L; ++t)
        {
            dout[t] = dy[t];
            du[t] = dout[t] * ch.skip;
            dD += dout[t] * u[t];
        }
    }
    return dD;
}

// ddelta holds d loss / d dt on entry: apply softplus' and return the sum over t (the channel's d delta_bias).
template <typename T>
T finishDelta(ScanArgs<T> const& a, T const* __restrict__ dtGrad, T* __restrict__ ddelta)
{
    int64_t const L = a.seqlen;
    T dBias = T(0);
    if (a.softplus)
    {
#pragma omp simd reduction(+ : dBias)
        for (int64_t t = 0; t < L; ++t)
        {
            ddelta[t] *= dtGrad[t];
            dBias += ddelta[t];
        }
    }
    else
    {
#pragma omp simd reduction(+ : dBias)
        for (int64_t t = 0; t < L; ++t)
        {
            dBias += ddelta[t];
        }
    }
    return dBias;
}

// Where the backward pass of one channel adds its contributions that are summed over the batch.
template <typename T>
struct ChannelSums
{
    T* dA;    // (N,)
    T* dD;    // a scratch value when there is no D
    T* dBias; // a scratch value when there is no delta_bias
};

// ---------------------------------------------------------------------------------------------------------------
// Portable kernel: any T, any N. kN > 0 fixes N at compile time; kN == 0 takes it at run time with the state in
// the scratch buffer. This is the readable statement of the algorithm; the AVX2 kernel below follows it step by
// step.

template <typename T, int kN>
struct PortableKernel
{
    static void forward(ScanArgs<T> const& a, int64_t b, int64_t d, T* work, T* y, T* lastState)
    {
        int64_t const N = kN > 0 ? kN : a.dstate;
        int64_t const L = a.seqlen;
        Channel<T> const ch = channelOf(a, b, d);
        T const* __restrict__ A = a.A + d * N;
        T const* __restrict__ Bt = a.Bt + ch.group; // (L, N)
        T const* __restrict__ Ct = a.Ct + ch.group; // (L, N)
        T* __restrict__ yRow = y + ch.row;
        ForwardWork<T> const w(work, L, N);
        T hLocal[kN > 0 ? kN : 1];
        T* __restrict__ h = kN > 0 ? hLocal : w.state;

        discretize(a, a.delta + ch.row, a.u + ch.row, ch.bias, w.dt, w.dtu, static_cast<T*>(nullptr));
        for (int64_t n = 0; n < N; ++n)
        {
            h[n] = T(0);
        }
        for (int64_t t0 = 0; t0 < L; t0 += kCHUNK)
        {
            int64_t const len = std::min(kCHUNK, L - t0);
            // The exponentials do not depend on the state: one vectorised pass, off the recurrence's critical path.
            for (int64_t c = 0; c < len; ++c)
            {
                T const dtc = w.dt[t0 + c];
#pragma omp simd
                for (int64_t n = 0; n < N; ++n)
                {
                    w.decay[c * N + n] = expApprox(dtc * A[n]);
                }
            }
            for (int64_t c = 0; c < len; ++c)
            {
                int64_t const t = t0 + c;
                T const x = w.dtu[t];
                T const* __restrict__ Bs = Bt + t * N;
                T const* __restrict__ Cs = Ct + t * N;
                T const* __restrict__ decay = w.decay + c * N;
                T acc = T(0);
#pragma omp simd reduction(+ : acc)
                for (int64_t n = 0; n < N; ++n)
                {
                    h[n] = decay[n] * h[n] + x * Bs[n];
                    acc += Cs[n] * h[n];
                }
                yRow[t] = acc;
            }
        }
        skipAndGate(a, ch, yRow);
        if (lastState != nullptr)
        {
            std::copy(h, h + N, lastState + ch.state);
        }
    }

    // As mamba-ssm's kernel: recompute the forward states (all L kept in `work`), then run the adjoint recurrence
    // g_t = dout_t C_t + exp(dt_{t+1} A) g_{t+1} from the end. With q_t = g_t h_{t-1} exp(dt_t A):
    //   dC_t += dout_t h_t,  dB_t += g_t dt_t u_t,  dA += q_t dt_t,
    //   du_t += dt_t sum(g_t B_t),  d dt_t = u_t sum(g_t B_t) + sum(q_t A).
    // dBSlab, dCSlab: the (L, N) accumulators where this channel adds its dB and dC.
    static void backward(ScanArgs<T> const& a, ScanGrads<T> const& g, int64_t b, int64_t d, T* work, T* dBSlab,
        T* dCSlab, ChannelSums<T>& sums)
    {
        int64_t const N = kN > 0 ? kN : a.dstate;
        int64_t const L = a.seqlen;
        Channel<T> const ch = channelOf(a, b, d);
        T const* __restrict__ u = a.u + ch.row;
        T const* __restrict__ A = a.A + d * N;
        T const* __restrict__ Bt = a.Bt + ch.group;
        T const* __restrict__ Ct = a.Ct + ch.group;
        T* __restrict__ du = g.du + ch.row;
        T* __restrict__ ddelta = g.ddelta + ch.row; // d loss / d dt until finishDelta
        T* __restrict__ dBt = dBSlab;
        T* __restrict__ dCt = dCSlab;
        T* __restrict__ dAsum = sums.dA;
        BackwardWork<T> const w(work, L, N);
        T adjLocal[kN > 0 ? kN : 1];
        T* __restrict__ adj = kN > 0 ? adjLocal : w.adj;

        discretize(a, a.delta + ch.row, u, ch.bias, w.dt, w.dtu, a.softplus ? w.dtGrad : static_cast<T*>(nullptr));
        for (int64_t t = 0; t < L; ++t)
        {
            T const dtc = w.dt[t];
#pragma omp simd
            for (int64_t n = 0; n < N; ++n)
            {
                w.decay[t * N + n] = expApprox(dtc * A[n]);
            }
        }
        std::fill(w.hs, w.hs + N, T(0));
        for (int64_t t = 0; t < L; ++t)
        {
            T const x = w.dtu[t];
            T const* __restrict__ Bs = Bt + t * N;
            T const* __restrict__ Cs = Ct + t * N;
            T const* __restrict__ decay = w.decay + t * N;
            T const* __restrict__ hPrev = w.hs + t * N;
            T* __restrict__ hCur = w.hs + (t + 1) * N;
            T acc = T(0);
#pragma omp simd reduction(+ : acc)
            for (int64_t n = 0; n < N; ++n)
            {
                hCur[n] = decay[n] * hPrev[n] + x * Bs[n];
                acc += Cs[n] * hCur[n];
            }
            w.yPre[t] = acc;
        }
        *sums.dD += gateBackward(a, g, ch, w.yPre, w.dout);

        T const* __restrict__ dLast = g.dlastState != nullptr ? g.dlastState + ch.state : nullptr;
        for (int64_t n = 0; n < N; ++n)
        {
            adj[n] = dLast != nullptr ? dLast[n] : T(0); // exp(dt_{t+1} A) g_{t+1} at the top of step t
        }
        for (int64_t t = L - 1; t >= 0; --t)
        {
            T const dO = w.dout[t];
            T const x = w.dtu[t];
            T const dtc = w.dt[t];
            T const* __restrict__ Bs = Bt + t * N;
            T const* __restrict__ Cs = Ct + t * N;
            T const* __restrict__ decay = w.decay + t * N;
            T const* __restrict__ hPrev = w.hs + t * N;
            T const* __restrict__ hCur = w.hs + (t + 1) * N;
            T* __restrict__ dBs = dBt + t * N;
            T* __restrict__ dCs = dCt + t * N;
            T gB = T(0);
            T qA = T(0);
#pragma omp simd reduction(+ : gB, qA)
            for (int64_t n = 0; n < N; ++n)
            {
                T const gn = adj[n] + dO * Cs[n];
                dCs[n] += dO * hCur[n];
                dBs[n] += gn * x;
                gB += gn * Bs[n];
                T const q = gn * hPrev[n] * decay[n];
                qA += q * A[n];
                dAsum[n] += q * dtc;
                adj[n] = gn * decay[n];
            }
            du[t] += dtc * gB;
            ddelta[t] = u[t] * gB + qA;
        }
        *sums.dBias += finishDelta(a, w.dtGrad, ddelta);
    }
};

#if M2S2L_SCAN_AVX2
// AVX2 + FMA kernel for float with N = 8 * kV (N = 16 in every M2S2L block), following PortableKernel step by
// step: the state is kV registers; steps go in groups of eight, whose exp(dt A) are computed together before the
// recurrence uses them and whose sums over n come out of one hsum8.
template <int kV>
struct Avx2Kernel
{
    static constexpr int64_t kN = 8 * kV;

    // discretize, 32 steps at a time (four independent vectors keep the exp/log chains overlapped). The last
    // partial block goes through a zero-padded copy, so every step gets the same arithmetic; it fills dt, dtu and
    // dtGrad up to a multiple of 32, for which the scratch rows have room.
    static void discretizeAvx2(ScanArgs<float> const& a, Channel<float> const& ch, float* __restrict__ dt,
        float* __restrict__ dtu, float* __restrict__ dtGrad)
    {
        constexpr int kB = 4; // vectors per block
        int64_t const L = a.seqlen;
        float const* __restrict__ delta = a.delta + ch.row;
        float const* __restrict__ u = a.u + ch.row;
        __m256 const bias = _mm256_set1_ps(ch.bias);
        auto block = [&](float const* dIn, float const* uIn, int64_t t) {
            __m256 x[kB];
            __m256 s[kB];
            for (int i = 0; i < kB; ++i)
            {
                x[i] = _mm256_add_ps(_mm256_loadu_ps(dIn + 8 * i), bias);
                s[i] = x[i];
            }
            if (a.softplus)
            {
                avx2::softplusBatch<kB>(s);
            }
            for (int i = 0; i < kB; ++i)
            {
                _mm256_storeu_ps(dt + t + 8 * i, s[i]);
                _mm256_storeu_ps(dtu + t + 8 * i, _mm256_mul_ps(s[i], _mm256_loadu_ps(uIn + 8 * i)));
            }
            if (dtGrad != nullptr)
            {
                avx2::softplusGradBatch<kB>(x);
                for (int i = 0; i < kB; ++i)
                {
                    _mm256_storeu_ps(dtGrad + t + 8 * i, x[i]);
                }
            }
        };
        int64_t t = 0;
        for (; t + 8 * kB <= L; t += 8 * kB)
        {
            block(delta + t, u + t, t);
        }
        if (t < L)
        {
            float dPad[8 * kB] = {};
            float uPad[8 * kB] = {};
            std::copy(delta + t, delta + L, dPad);
            std::copy(u + t, u + L, uPad);
            block(dPad, uPad, t);
        }
    }

    // decay[j * kV + v] = exp(dt[j] * A[v]) for the eight steps of a group.
    static void groupDecays(float const* __restrict__ dt, __m256 const* A, __m256* decay)
    {
        for (int j = 0; j < 8; ++j)
        {
            __m256 const dtv = _mm256_set1_ps(dt[j]);
            for (int v = 0; v < kV; ++v)
            {
                decay[j * kV + v] = _mm256_mul_ps(dtv, A[v]);
            }
        }
        avx2::expBatch<8 * kV>(decay);
    }

    // h_t = exp(dt_t A) h_{t-1} + dt_t u_t B_t from h_{-1} = 0, and yOut[t] = C_t . h_t (before D and the gate), in
    // groups of eight steps; h holds h_{L-1} on return. With kKeep (the backward pass) every exp(dt_t A) goes to
    // decayOut[t * N + n] and every state to hsOut[(t + 1) * N + n], with hsOut[0..N) = h_{-1} = 0.
    template <bool kKeep>
    static void recurrence(float const* ARow, float const* __restrict__ Bt, float const* __restrict__ Ct,
        float const* __restrict__ dt, float const* __restrict__ dtu, int64_t L, float* __restrict__ yOut,
        float* __restrict__ decayOut, float* __restrict__ hsOut, __m256 (&h)[kV])
    {
        __m256 A[kV];
        for (int v = 0; v < kV; ++v)
        {
            A[v] = _mm256_loadu_ps(ARow + 8 * v);
            h[v] = _mm256_setzero_ps();
            if constexpr (kKeep)
            {
                _mm256_storeu_ps(hsOut + 8 * v, h[v]);
            }
        }
        for (int64_t t0 = 0; t0 < L; t0 += 8)
        {
            int const len = static_cast<int>(std::min<int64_t>(8, L - t0));
            __m256 decay[8 * kV];
            groupDecays(dt + t0, A, decay);
            __m256 p[8]; // partial sums of C_t . h_t
            for (int j = 0; j < len; ++j)
            {
                int64_t const t = t0 + j;
                __m256 const x = _mm256_set1_ps(dtu[t]);
                __m256 acc = _mm256_setzero_ps();
                for (int v = 0; v < kV; ++v)
                {
                    int64_t const o = t * kN + 8 * v;
                    h[v] = _mm256_fmadd_ps(decay[j * kV + v], h[v], _mm256_mul_ps(x, _mm256_loadu_ps(Bt + o)));
                    if constexpr (kKeep)
                    {
                        _mm256_storeu_ps(decayOut + o, decay[j * kV + v]);
                        _mm256_storeu_ps(hsOut + o + kN, h[v]);
                    }
                    acc = _mm256_fmadd_ps(_mm256_loadu_ps(Ct + o), h[v], acc);
                }
                p[j] = acc;
            }
            if (len == 8)
            {
                _mm256_storeu_ps(yOut + t0, avx2::hsum8(p));
            }
            else
            {
                for (int j = 0; j < len; ++j)
                {
                    yOut[t0 + j] = avx2::hsum(p[j]);
                }
            }
        }
    }

    static void forward(ScanArgs<float> const& a, int64_t b, int64_t d, float* work, float* y, float* lastState)
    {
        int64_t const L = a.seqlen;
        Channel<float> const ch = channelOf(a, b, d);
        float const* __restrict__ Bt = a.Bt + ch.group;
        float const* __restrict__ Ct = a.Ct + ch.group;
        float* __restrict__ yRow = y + ch.row;
        ForwardWork<float> const w(work, L, kN);
        discretizeAvx2(a, ch, w.dt, w.dtu, nullptr);

        __m256 h[kV];
        recurrence<false>(a.A + d * kN, Bt, Ct, w.dt, w.dtu, L, yRow, nullptr, nullptr, h);
        skipAndGate(a, ch, yRow);
        if (lastState != nullptr)
        {
            for (int v = 0; v < kV; ++v)
            {
                _mm256_storeu_ps(lastState + ch.state + 8 * v, h[v]);
            }
        }
    }

    static void backward(ScanArgs<float> const& a, ScanGrads<float> const& g, int64_t b, int64_t d, float* work,
        float* dBSlab, float* dCSlab, ChannelSums<float>& sums)
    {
        int64_t const L = a.seqlen;
        Channel<float> const ch = channelOf(a, b, d);
        float const* __restrict__ u = a.u + ch.row;
        float const* __restrict__ Bt = a.Bt + ch.group;
        float const* __restrict__ Ct = a.Ct + ch.group;
        float* __restrict__ du = g.du + ch.row;
        float* __restrict__ ddelta = g.ddelta + ch.row;
        float* __restrict__ dBt = dBSlab;
        float* __restrict__ dCt = dCSlab;
        BackwardWork<float> const w(work, L, kN);
        discretizeAvx2(a, ch, w.dt, w.dtu, a.softplus ? w.dtGrad : nullptr);

        // Forward recomputation, keeping every state and every exp(dt A).
        __m256 h[kV];
        recurrence<true>(a.A + d * kN, Bt, Ct, w.dt, w.dtu, L, w.yPre, w.decay, w.hs, h);
        __m256 A[kV];
        for (int v = 0; v < kV; ++v)
        {
            A[v] = _mm256_loadu_ps(a.A + d * kN + 8 * v);
        }
        *sums.dD += gateBackward(a, g, ch, w.yPre, w.dout);

        __m256 adj[kV];
        __m256 dAsum[kV];
        for (int v = 0; v < kV; ++v)
        {
            adj[v] = g.dlastState != nullptr ? _mm256_loadu_ps(g.dlastState + ch.state + 8 * v) : _mm256_setzero_ps();
            dAsum[v] = _mm256_loadu_ps(sums.dA + 8 * v);
        }
        // One reverse step (see PortableKernel::backward); pB and pQ get the partial sums of g_t B_t and q_t A.
        // h holds h_t on entry (the forward pass left h_{L-1} there) and h_{t-1} on exit: one state load per step.
        auto backwardStep = [&](int64_t t, __m256& pB, __m256& pQ) {
            __m256 const dO = _mm256_set1_ps(w.dout[t]);
            __m256 const x = _mm256_set1_ps(w.dtu[t]);
            __m256 const dtv = _mm256_set1_ps(w.dt[t]);
            pB = _mm256_setzero_ps();
            pQ = _mm256_setzero_ps();
            for (int v = 0; v < kV; ++v)
            {
                int64_t const o = t * kN + 8 * v;
                __m256 const hPrev = _mm256_loadu_ps(w.hs + o);
                __m256 const gn = _mm256_fmadd_ps(dO, _mm256_loadu_ps(Ct + o), adj[v]);
                _mm256_storeu_ps(dCt + o, _mm256_fmadd_ps(dO, h[v], _mm256_loadu_ps(dCt + o)));
                _mm256_storeu_ps(dBt + o, _mm256_fmadd_ps(gn, x, _mm256_loadu_ps(dBt + o)));
                pB = _mm256_fmadd_ps(gn, _mm256_loadu_ps(Bt + o), pB);
                __m256 const decay = _mm256_loadu_ps(w.decay + o);
                __m256 const q = _mm256_mul_ps(_mm256_mul_ps(gn, hPrev), decay);
                pQ = _mm256_fmadd_ps(q, A[v], pQ);
                dAsum[v] = _mm256_fmadd_ps(q, dtv, dAsum[v]);
                adj[v] = _mm256_mul_ps(gn, decay);
                h[v] = hPrev;
            }
        };
        int64_t const L8 = L / 8 * 8;
        for (int64_t s = L - 1; s >= L8; --s)
        {
            __m256 pB;
            __m256 pQ;
            backwardStep(s, pB, pQ);
            float const gB = avx2::hsum(pB);
            du[s] += w.dt[s] * gB;
            ddelta[s] = u[s] * gB + avx2::hsum(pQ);
        }
        for (int64_t s0 = L8 - 8; s0 >= 0; s0 -= 8)
        {
            __m256 pB[8];
            __m256 pQ[8];
            for (int j = 7; j >= 0; --j)
            {
                backwardStep(s0 + j, pB[j], pQ[j]);
            }
            __m256 const gB = avx2::hsum8(pB);
            __m256 const qA = avx2::hsum8(pQ);
            _mm256_storeu_ps(du + s0, _mm256_fmadd_ps(_mm256_loadu_ps(w.dt + s0), gB, _mm256_loadu_ps(du + s0)));
            _mm256_storeu_ps(ddelta + s0, _mm256_fmadd_ps(_mm256_loadu_ps(u + s0), gB, qA));
        }
        for (int v = 0; v < kV; ++v)
        {
            _mm256_storeu_ps(sums.dA + 8 * v, dAsum[v]);
        }
        *sums.dBias += finishDelta(a, w.dtGrad, ddelta);
    }
};
#endif

// Calls f(Kernel{}) with the fastest kernel for this dtype and N.
template <typename T, typename F>
void withKernel(int64_t dstate, F&& f)
{
#if M2S2L_SCAN_AVX2
    if constexpr (std::is_same_v<T, float>)
    {
        switch (dstate)
        {
        case 8: f(Avx2Kernel<1>{}); return;
        case 16: f(Avx2Kernel<2>{}); return;
        case 32: f(Avx2Kernel<4>{}); return;
        default: break;
        }
    }
#endif
    if (dstate == 16)
    {
        f(PortableKernel<T, 16>{});
    }
    else
    {
        f(PortableKernel<T, 0>{});
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Drivers

template <typename T>
int checkArgs(ScanArgs<T> const& a, int numThreads)
{
    if (a.u == nullptr || a.delta == nullptr || a.A == nullptr || a.Bt == nullptr || a.Ct == nullptr)
    {
        return kBAD_ARGUMENT;
    }
    if (a.batch < 0 || a.dim < 0 || a.seqlen < 0 || a.dstate < 1 || a.groups < 1 || a.dim % a.groups != 0
        || numThreads < 1)
    {
        return kBAD_ARGUMENT;
    }
    return kOK;
}

template <typename T>
int forward(ScanArgs<T> const& a, T* y, T* lastState, int numThreads)
{
    int const status = checkArgs(a, numThreads);
    if (status != kOK)
    {
        return status;
    }
    if (y == nullptr)
    {
        return kBAD_ARGUMENT;
    }
    int64_t const workStride = ForwardWork<T>::size(a.seqlen, a.dstate);
    // Allocated here, outside the parallel region, so that bad_alloc never has to cross an OpenMP boundary.
    std::vector<T> workAll(static_cast<size_t>(workStride * numThreads));
    int64_t const channels = a.batch * a.dim;
    withKernel<T>(a.dstate, [&](auto kernel) {
        using Kernel = decltype(kernel);
#pragma omp parallel num_threads(numThreads)
        {
            T* work = workAll.data() + omp_get_thread_num() * workStride;
            // Channels are independent, so dynamic scheduling balances a shared machine without changing a result.
#pragma omp for schedule(dynamic, 8)
            for (int64_t i = 0; i < channels; ++i)
            {
                Kernel::forward(a, i % a.batch, i / a.batch, work, y, lastState);
            }
        }
    });
    return kOK;
}

template <typename T>
int backward(ScanArgs<T> const& a, ScanGrads<T> const& g, int numThreads)
{
    int const status = checkArgs(a, numThreads);
    if (status != kOK)
    {
        return status;
    }
    bool const gradsMatch = g.dy != nullptr && g.du != nullptr && g.ddelta != nullptr && g.dA != nullptr
        && g.dBt != nullptr && g.dCt != nullptr && (g.dD != nullptr) == (a.D != nullptr)
        && (g.dz != nullptr) == (a.z != nullptr) && (g.ddeltaBias != nullptr) == (a.deltaBias != nullptr);
    if (!gradsMatch)
    {
        return kBAD_ARGUMENT;
    }
    int64_t const N = a.dstate;
    int64_t const LN = a.seqlen * N;
    int64_t const dimPerGroup = a.dim / a.groups;
    // dB and dC sum over the channels of a group. Each group's channels are split into a fixed number of blocks,
    // each with its own (B, L, N) accumulators, summed in block order at the end: the result depends on neither the
    // thread count nor the timing, and blocks can be scheduled dynamically (a shared machine stalls no thread).
    // At least 128 channels per block keeps the accumulators' zeroing and reduction near 5% of the work.
    int64_t const blocksPerGroup = std::clamp<int64_t>(dimPerGroup / 128, 1, 8);
    int64_t const numBlocks = a.groups * blocksPerGroup;
    int64_t const slab = a.batch * LN; // one block's dB (or dC)
    int64_t const workStride = BackwardWork<T>::size(a.seqlen, N);
    std::vector<T> workAll(static_cast<size_t>(workStride * numThreads));
    // Left uninitialised here: each block zeroes its own accumulators on the thread that then uses them.
    std::unique_ptr<T[]> acc(new T[static_cast<size_t>(2 * numBlocks * slab)]);
    withKernel<T>(N, [&](auto kernel) {
        using Kernel = decltype(kernel);
#pragma omp parallel num_threads(numThreads)
        {
            T* work = workAll.data() + omp_get_thread_num() * workStride;
#pragma omp for schedule(dynamic, 1)
            for (int64_t blk = 0; blk < numBlocks; ++blk)
            {
                int64_t const k = blk / blocksPerGroup;
                int64_t const j = blk % blocksPerGroup;
                int64_t const d0 = k * dimPerGroup + dimPerGroup * j / blocksPerGroup;
                int64_t const d1 = k * dimPerGroup + dimPerGroup * (j + 1) / blocksPerGroup;
                T* dB = acc.get() + 2 * blk * slab;
                T* dC = dB + slab;
                std::fill(dB, dB + 2 * slab, T(0));
                // A channel lives in one block, so dA, dD and d(delta_bias) have a single writer. Batch outermost:
                // consecutive channels share their slices of B, C, dB and dC (cache reuse at batch > 1).
                std::fill(g.dA + d0 * N, g.dA + d1 * N, T(0));
                T unused[2] = {};
                for (int64_t d = d0; d < d1; ++d)
                {
                    (g.dD != nullptr ? g.dD[d] : unused[0]) = T(0);
                    (g.ddeltaBias != nullptr ? g.ddeltaBias[d] : unused[1]) = T(0);
                }
                for (int64_t b = 0; b < a.batch; ++b)
                {
                    for (int64_t d = d0; d < d1; ++d)
                    {
                        ChannelSums<T> sums{g.dA + d * N, g.dD != nullptr ? g.dD + d : &unused[0],
                            g.ddeltaBias != nullptr ? g.ddeltaBias + d : &unused[1]};
                        Kernel::backward(a, g, b, d, work, dB + b * LN, dC + b * LN, sums);
                    }
                }
            }
            // After the loop's implicit barrier every block is complete: dBt[b, k] = sum of k's blocks in block
            // order. One block at a time over a short run of elements: the blocks lie a multiple of 64 KiB apart,
            // so reading all of them per element would map every read to the same cache sets.
            constexpr int64_t kRUN = 2048;
            int64_t const runs = (LN + kRUN - 1) / kRUN;
#pragma omp for schedule(static)
            for (int64_t q = 0; q < a.batch * a.groups * runs; ++q)
            {
                int64_t const bk = q / runs;
                int64_t const r0 = (q % runs) * kRUN;
                int64_t const len = std::min(kRUN, LN - r0);
                int64_t const b = bk / a.groups;
                int64_t const k = bk % a.groups;
                T const* src = acc.get() + 2 * k * blocksPerGroup * slab + b * LN + r0;
                T* __restrict__ outB = g.dBt + bk * LN + r0;
                T* __restrict__ outC = g.dCt + bk * LN + r0;
                std::copy(src, src + len, outB);
                std::copy(src + slab, src + slab + len, outC);
                for (int64_t j = 1; j < blocksPerGroup; ++j)
                {
                    T const* __restrict__ sB = src + 2 * j * slab;
                    T const* __restrict__ sC = sB + slab;
#pragma omp simd
                    for (int64_t r = 0; r < len; ++r)
                    {
                        outB[r] += sB[r];
                        outC[r] += sC[r];
                    }
                }
            }
        }
    });
    return kOK;
}

template <typename F>
int guarded(F&& f) noexcept
{
    try
    {
        return f();
    }
    catch (std::bad_alloc const&)
    {
        return kOUT_OF_MEMORY;
    }
    catch (...)
    {
        return kINTERNAL_ERROR;
    }
}

} // namespace
} // namespace m2s2l

// ---------------------------------------------------------------------------------------------------------------
// C ABI. Argument order follows mamba-ssm's selective_scan_fwd / selective_scan_bwd.

#define M2S2L_SCAN_ENTRY_POINTS(T, SUFFIX)                                                                            \
    M2S2L_API int m2s2l_scan_fwd_##SUFFIX(T const* u, T const* delta, T const* A, T const* Bt, T const* Ct,          \
        T const* D, T const* z, T const* deltaBias, int32_t softplus, int64_t batch, int64_t dim, int64_t groups,  \
        int64_t dstate, int64_t seqlen, T* y, T* lastState, int32_t numThreads) noexcept                             \
    {                                                                                                               \
        m2s2l::ScanArgs<T> const a{u, delta, A, Bt, Ct, D, z, deltaBias, softplus != 0, batch, dim, groups, dstate, \
            seqlen};                                                                                                \
        return m2s2l::guarded([&] { return m2s2l::forward(a, y, lastState, numThreads); });                         \
    }                                                                                                               \
    M2S2L_API int m2s2l_scan_bwd_##SUFFIX(T const* u, T const* delta, T const* A, T const* Bt, T const* Ct,          \
        T const* D, T const* z, T const* deltaBias, int32_t softplus, int64_t batch, int64_t dim, int64_t groups,  \
        int64_t dstate, int64_t seqlen, T const* dy, T const* dlastState, T* du, T* ddelta, T* dA, T* dBt,         \
        T* dCt, T* dD, T* dz, T* ddeltaBias, int32_t numThreads) noexcept                                           \
    {                                                                                                               \
        m2s2l::ScanArgs<T> const a{u, delta, A, Bt, Ct, D, z, deltaBias, softplus != 0, batch, dim, groups, dstate, \
            seqlen};                                                                                                \
        m2s2l::ScanGrads<T> const g{dy, dlastState, du, ddelta, dA, dBt, dCt, dD, dz, ddeltaBias};                  \
        return m2s2l::guarded([&] { return m2s2l::backward(a, g, numThreads); });                                   \
    }

M2S2L_SCAN_ENTRY_POINTS(float, f32)
M2S2L_SCAN_ENTRY_POINTS(double, f64)

M2S2L_API int m2s2l_scan_abi_version() noexcept
{
    return m2s2l::kABI_VERSION;
}

M2S2L_API char const* m2s2l_scan_status_string(int status) noexcept
{
    switch (status)
    {
    case m2s2l::kOK: return "success";
    case m2s2l::kBAD_ARGUMENT: return "invalid argument (null pointer, negative size, or groups not dividing dim)";
    case m2s2l::kOUT_OF_MEMORY: return "out of memory for the scan's scratch buffers";
    case m2s2l::kINTERNAL_ERROR: return "internal error";
    default: return "unknown status";
    }
}
