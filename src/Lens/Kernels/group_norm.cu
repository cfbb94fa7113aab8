// Fused GroupNorm and residual kernels (issue #11), compiled at run time by NVRTC for the GPU in use; no CUDA headers.
// Activations are [N, C, HW] in one of two layouts: channels-first (NCHW-contiguous) or channels-last (NHWC; also a
// [N, L, C]-contiguous tensor seen as [N, C, L]).
//   gn_stats      per (row, group): mean and 1/std of x + bias_in (statistics accumulated in double)
//   gn_apply      y = act( ((x + bias_in - mean) * rstd * gamma + beta) * (1 + scale[n,c]) + shift[n,c] ), each part
//                 optional: what diffusers' ResnetBlock2D computes as bias add -> group_norm -> [h * (1 + scale) + shift]
//                 -> act in three to five passes
//   add_residual  y = (a + bias_a[c] + r + bias_r[c]) / output_scale: a convolution's bias, the shortcut's bias and
//                 the residual sum in one pass
// bias_in is [N, C] rows biasStride apart (0: one bias for every row). Per-element math is float, rounded once.
// Compiled with --fmad=false and written with explicit multiply-adds, so the vectorised and the one-by-one paths, and
// both layouts, compute every value alike: a row's numbers do not depend on the rows beside it or on alignment.

typedef unsigned short u16;
typedef long long i64;

__device__ __forceinline__ float h2f(u16 h) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f; }
__device__ __forceinline__ u16 f2h(float f) { u16 h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h; }
__device__ __forceinline__ float b2f(u16 b) { return __uint_as_float(((unsigned)b) << 16); }
__device__ __forceinline__ u16 f2b(float f)
{
    unsigned u = __float_as_uint(f);
    if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu)) return (u16)((u >> 16) | 0x40); // NaN stays NaN
    u += 0x7fffu + ((u >> 16) & 1u); // round to nearest even
    return (u16)(u >> 16);
}

struct F16 { typedef u16 T; static __device__ __forceinline__ float ld(T v) { return h2f(v); } static __device__ __forceinline__ T st(float f) { return f2h(f); } };
struct BF16 { typedef u16 T; static __device__ __forceinline__ float ld(T v) { return b2f(v); } static __device__ __forceinline__ T st(float f) { return f2b(f); } };
struct F32 { typedef float T; static __device__ __forceinline__ float ld(T v) { return v; } static __device__ __forceinline__ T st(float f) { return f; } };

// activation codes: 0 none, 1 silu, 2 gelu (erf), 3 gelu (tanh), 4 mish, 5 relu
__device__ __forceinline__ float activate(float v, int act)
{
    switch (act)
    {
        case 1: return v / (1.0f + expf(-v));
        case 2: return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
        case 3: { float k = 0.79788456080286536f * (v + 0.044715f * v * v * v); return 0.5f * v * (1.0f + tanhf(k)); }
        case 4: return v * tanhf(log1pf(expf(v)));
        case 5: return v > 0.0f ? v : 0.0f;
        default: return v;
    }
}

template <class D> __device__ __forceinline__ void load8(const typename D::T* p, float* v)
{
    uint4 w = *(const uint4*)p;
    unsigned parts[4] = { w.x, w.y, w.z, w.w };
#pragma unroll
    for (int k = 0; k < 4; k++) { v[2 * k] = D::ld((typename D::T)(parts[k] & 0xffffu)); v[2 * k + 1] = D::ld((typename D::T)(parts[k] >> 16)); }
}

template <class D> __device__ __forceinline__ void store8(typename D::T* p, const float* v)
{
    unsigned parts[4];
#pragma unroll
    for (int k = 0; k < 4; k++) parts[k] = (unsigned)D::st(v[2 * k]) | ((unsigned)D::st(v[2 * k + 1]) << 16);
    *(uint4*)p = make_uint4(parts[0], parts[1], parts[2], parts[3]);
}

__device__ __forceinline__ bool aligned16(const void* p) { return (((unsigned long long)p) & 15) == 0; }

__device__ __forceinline__ void block_sum2(double& a, double& b)
{
    __shared__ double sa[32], sb[32];
    for (int o = 16; o > 0; o >>= 1) { a += __shfl_down_sync(0xffffffffu, a, o); b += __shfl_down_sync(0xffffffffu, b, o); }
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) { sa[warp] = a; sb[warp] = b; }
    __syncthreads();
    int warps = (blockDim.x + 31) >> 5;
    a = lane < warps ? sa[lane] : 0.0; b = lane < warps ? sb[lane] : 0.0;
    if (warp == 0)
        for (int o = 16; o > 0; o >>= 1) { a += __shfl_down_sync(0xffffffffu, a, o); b += __shfl_down_sync(0xffffffffu, b, o); }
}

// grid: one block per (row, group); stats[2 * block] = mean, 1/std of the group's x + bias_in.
// One summation order for every layout, alignment and batch: the group's values in channels-first order (value j is
// channel j / HW, position j % HW) in chunks of eight, chunk k summed by thread k % blockDim in float, each thread's
// chunk sums accumulated in double, then the block's fixed reduction tree. Eight contiguous, aligned values are loaded
// at once; otherwise one by one, with the same arithmetic. (Before, channels-last and unaligned inputs were summed in
// another order, so a [1, C, H, W] call and the same row inside a larger batch could differ in the last bit.)
template <class D>
__device__ __forceinline__ void gn_stats(const typename D::T* __restrict__ x, float* __restrict__ stats,
    const typename D::T* __restrict__ bias, i64 biasStride, int C, int G, i64 HW, int nhwc, float eps)
{
    const int cg = C / G;
    const int n = blockIdx.x / G, g = blockIdx.x % G;
    const i64 count = (i64)cg * HW;
    const typename D::T* rowBias = bias ? bias + n * biasStride + (i64)g * cg : 0;
    const typename D::T* p = nhwc ? x + (i64)n * HW * C + (i64)g * cg // value (ch, q) at p[q * C + ch]
                                  : x + ((i64)n * C + (i64)g * cg) * HW; // value j at p[j]
    const bool vec = sizeof(typename D::T) == 2 && !nhwc && (HW & 7) == 0 && aligned16(p);
    double s = 0.0, ss = 0.0;
    for (i64 j = (i64)threadIdx.x * 8; j < count; j += (i64)blockDim.x * 8)
    {
        const int m = count - j < 8 ? (int)(count - j) : 8;
        const i64 ch0 = j / HW, q0 = j - ch0 * HW; // one division per chunk; channel and position advance below
        float v[8];
        if (vec) load8<D>(p + j, v);
        else
        {
            i64 ch = ch0, q = q0;
            for (int k = 0; k < m; k++)
            {
                v[k] = D::ld(nhwc ? p[q * C + ch] : p[j + k]);
                if (++q == HW) { q = 0; ch++; }
            }
        }
        float fs = 0.0f, fss = 0.0f;
        i64 ch = ch0, q = q0;
        for (int k = 0; k < m; k++)
        {
            float u = __fadd_rn(v[k], rowBias ? D::ld(rowBias[ch]) : 0.0f);
            fs = __fadd_rn(fs, u);
            fss = __fmaf_rn(u, u, fss);
            if (++q == HW) { q = 0; ch++; }
        }
        s += (double)fs; ss += (double)fss;
    }
    block_sum2(s, ss);
    if (threadIdx.x == 0)
    {
        double mean = s / (double)count;
        double var = ss / (double)count - mean * mean;
        if (var < 0.0) var = 0.0;
        stats[2 * blockIdx.x] = (float)mean;
        stats[2 * blockIdx.x + 1] = (float)(1.0 / sqrt(var + (double)eps));
    }
}

// row n and channel c of the [N, C, HW] tensor's flat index i in either layout
__device__ __forceinline__ void channel_of(i64 i, int C, i64 HW, int nhwc, i64& n, int& c)
{
    if (nhwc) { n = i / (HW * C); c = (int)(i % C); }
    else { i64 row = i / HW; n = row / C; c = (int)(row - n * C); }
}

// the per-(n, c) affine the apply pass uses: y = act(x * a + b)
template <class D>
__device__ __forceinline__ void gn_coeffs(i64 n, int c, const float* stats, int cg, int G,
    const typename D::T* bias, i64 biasStride, const typename D::T* gamma, const typename D::T* beta,
    const typename D::T* ss, i64 ssStride, int C, float& a, float& b)
{
    const i64 k = n * G + c / cg;
    float mean = stats[2 * k], rstd = stats[2 * k + 1];
    a = gamma ? __fmul_rn(rstd, D::ld(gamma[c])) : rstd;
    b = __fmaf_rn(__fsub_rn(bias ? D::ld(bias[n * biasStride + c]) : 0.0f, mean), a, beta ? D::ld(beta[c]) : 0.0f);
    if (ss)
    {
        float sc = 1.0f + D::ld(ss[n * ssStride + c]), sh = D::ld(ss[n * ssStride + C + c]);
        a = __fmul_rn(a, sc); b = __fmaf_rn(b, sc, sh);
    }
}

// y may be x; ss: null or [N, >= 2C] rows ssStride apart, scale at [n, c] and shift at [n, C + c]
template <class D>
__device__ __forceinline__ void gn_apply(const typename D::T* x, typename D::T* y, const float* __restrict__ stats,
    const typename D::T* __restrict__ bias, i64 biasStride, const typename D::T* __restrict__ gamma,
    const typename D::T* __restrict__ beta, const typename D::T* __restrict__ ss, i64 ssStride,
    int C, int G, i64 HW, i64 total, int nhwc, int act)
{
    const int cg = C / G;
    const bool vec = sizeof(typename D::T) == 2 && aligned16(x) && aligned16(y) && (nhwc ? (C & 7) == 0 : (HW & 7) == 0);
    const int width = vec ? 8 : 1;
    const i64 step = (i64)gridDim.x * blockDim.x * width;
    for (i64 i = ((i64)blockIdx.x * blockDim.x + threadIdx.x) * width; i < total; i += step)
    {
        i64 n; int c;
        channel_of(i, C, HW, nhwc, n, c);
        float a, b;
        if (vec)
        {
            float v[8]; load8<D>(x + i, v);
            if (!nhwc) // eight values of one channel
            {
                gn_coeffs<D>(n, c, stats, cg, G, bias, biasStride, gamma, beta, ss, ssStride, C, a, b);
#pragma unroll
                for (int k = 0; k < 8; k++) v[k] = activate(__fmaf_rn(v[k], a, b), act);
            }
            else // eight channels of one position
            {
#pragma unroll
                for (int k = 0; k < 8; k++)
                {
                    gn_coeffs<D>(n, c + k, stats, cg, G, bias, biasStride, gamma, beta, ss, ssStride, C, a, b);
                    v[k] = activate(__fmaf_rn(v[k], a, b), act);
                }
            }
            store8<D>(y + i, v);
        }
        else
        {
            gn_coeffs<D>(n, c, stats, cg, G, bias, biasStride, gamma, beta, ss, ssStride, C, a, b);
            y[i] = D::st(activate(__fmaf_rn(D::ld(x[i]), a, b), act));
        }
    }
}

// y = (a + biasA[c] + r + biasR[c]) / scale, each bias optional; y may be a or r
template <class D>
__device__ __forceinline__ void add_residual(const typename D::T* a, const typename D::T* __restrict__ biasA,
    const typename D::T* r, const typename D::T* __restrict__ biasR, typename D::T* y, int C, i64 HW, i64 total,
    int nhwc, float scale)
{
    const bool vec = sizeof(typename D::T) == 2 && aligned16(a) && aligned16(r) && aligned16(y) && (nhwc ? (C & 7) == 0 : (HW & 7) == 0);
    const int width = vec ? 8 : 1;
    const i64 step = (i64)gridDim.x * blockDim.x * width;
    for (i64 i = ((i64)blockIdx.x * blockDim.x + threadIdx.x) * width; i < total; i += step)
    {
        i64 n; int c;
        channel_of(i, C, HW, nhwc, n, c);
        if (vec)
        {
            float va[8], vr[8];
            load8<D>(a + i, va); load8<D>(r + i, vr);
#pragma unroll
            for (int k = 0; k < 8; k++)
            {
                int ck = nhwc ? c + k : c;
                float s = va[k] + (biasA ? D::ld(biasA[ck]) : 0.0f) + vr[k] + (biasR ? D::ld(biasR[ck]) : 0.0f);
                va[k] = scale == 1.0f ? s : s / scale;
            }
            store8<D>(y + i, va);
        }
        else
        {
            float s = D::ld(a[i]) + (biasA ? D::ld(biasA[c]) : 0.0f) + D::ld(r[i]) + (biasR ? D::ld(biasR[c]) : 0.0f);
            y[i] = D::st(scale == 1.0f ? s : s / scale);
        }
    }
}

#define LENS_KERNELS(SUFFIX, D) \
extern "C" __global__ void gn_stats_##SUFFIX(const D::T* x, float* stats, const D::T* bias, i64 biasStride, int C, int G, \
    i64 HW, int nhwc, float eps) \
{ gn_stats<D>(x, stats, bias, biasStride, C, G, HW, nhwc, eps); } \
extern "C" __global__ void gn_apply_##SUFFIX(const D::T* x, D::T* y, const float* stats, const D::T* bias, i64 biasStride, \
    const D::T* gamma, const D::T* beta, const D::T* ss, i64 ssStride, int C, int G, i64 HW, i64 total, int nhwc, int act) \
{ gn_apply<D>(x, y, stats, bias, biasStride, gamma, beta, ss, ssStride, C, G, HW, total, nhwc, act); } \
extern "C" __global__ void add_residual_##SUFFIX(const D::T* a, const D::T* biasA, const D::T* r, const D::T* biasR, D::T* y, \
    int C, i64 HW, i64 total, int nhwc, float scale) \
{ add_residual<D>(a, biasA, r, biasR, y, C, HW, total, nhwc, scale); }

LENS_KERNELS(f16, F16)
LENS_KERNELS(bf16, BF16)
LENS_KERNELS(f32, F32)
