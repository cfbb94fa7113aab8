// Fused GroupNorm for NCHW-contiguous activations (issue #11), compiled at run time by NVRTC for the GPU in use.
// One kernel computes each (row, group)'s mean and 1/std; a second applies, in one pass over the tensor,
//   y = act( ((x - mean) * rstd * gamma + beta) * (1 + scale[n,c]) + shift[n,c] )
// with the affine, the scale-shift and the activation each optional: what diffusers' ResnetBlock2D computes as
// group_norm -> [h * (1 + scale) + shift] -> act in three to five passes. Statistics are accumulated in double,
// the per-element math is float, and the result is rounded once to the tensor's type. No CUDA headers are needed.

typedef unsigned short u16;

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

// grid: one block per (row, group), the group being groupSize contiguous elements; stats[2*block] = mean, 1/std
template <class D>
__device__ __forceinline__ void gn_stats(const typename D::T* __restrict__ x, float* __restrict__ stats, long long groupSize, float eps)
{
    const typename D::T* p = x + (long long)blockIdx.x * groupSize;
    double s = 0.0, ss = 0.0;
    if (sizeof(typename D::T) == 2 && (groupSize & 7) == 0 && (((unsigned long long)p) & 15) == 0)
    {
        const uint4* q = (const uint4*)p;
        long long n8 = groupSize >> 3;
        for (long long i = threadIdx.x; i < n8; i += blockDim.x)
        {
            uint4 w = q[i];
            unsigned parts[4] = { w.x, w.y, w.z, w.w };
            float fs = 0.0f, fss = 0.0f;
#pragma unroll
            for (int k = 0; k < 4; k++)
            {
                float lo = D::ld((typename D::T)(parts[k] & 0xffffu)), hi = D::ld((typename D::T)(parts[k] >> 16));
                fs += lo + hi; fss += lo * lo + hi * hi;
            }
            s += fs; ss += fss;
        }
    }
    else
    {
        for (long long i = threadIdx.x; i < groupSize; i += blockDim.x) { float v = D::ld(p[i]); s += v; ss += (double)v * v; }
    }
    block_sum2(s, ss);
    if (threadIdx.x == 0)
    {
        double mean = s / (double)groupSize;
        double var = ss / (double)groupSize - mean * mean;
        if (var < 0.0) var = 0.0;
        stats[2 * blockIdx.x] = (float)mean;
        stats[2 * blockIdx.x + 1] = (float)(1.0 / sqrt(var + (double)eps));
    }
}

// y = act(affine(norm(x)) * (1 + scale) + shift), x and y [N, C, HW] contiguous (y may be x);
// ss: null or [N, >= 2C] rows ssStride apart, scale at ss[n, c] and shift at ss[n, C + c]
template <class D>
__device__ __forceinline__ void gn_apply(const typename D::T* x, typename D::T* y, const float* __restrict__ stats,
    const typename D::T* __restrict__ gamma, const typename D::T* __restrict__ beta, const typename D::T* __restrict__ ss,
    long long ssStride, int C, int G, long long HW, long long total, int act)
{
    const int cg = C / G;
    const bool vec = sizeof(typename D::T) == 2 && (HW & 7) == 0 && (((unsigned long long)x) & 15) == 0 && (((unsigned long long)y) & 15) == 0;
    const int width = vec ? 8 : 1;
    long long start = ((long long)blockIdx.x * blockDim.x + threadIdx.x) * width;
    long long step = (long long)gridDim.x * blockDim.x * width;
    for (long long i = start; i < total; i += step)
    {
        long long row = i / HW; // n * C + c
        int c = (int)(row % C);
        long long n = row / C;
        float mean = stats[2 * (n * G + c / cg)], rstd = stats[2 * (n * G + c / cg) + 1];
        float a = gamma ? rstd * D::ld(gamma[c]) : rstd;
        float b = (beta ? D::ld(beta[c]) : 0.0f) - mean * a;
        if (ss)
        {
            float sc = 1.0f + D::ld(ss[n * ssStride + c]), sh = D::ld(ss[n * ssStride + C + c]);
            a *= sc; b = b * sc + sh;
        }
        if (vec)
        {
            uint4 w = *(const uint4*)(x + i);
            unsigned parts[4] = { w.x, w.y, w.z, w.w };
#pragma unroll
            for (int k = 0; k < 4; k++)
            {
                float lo = activate(D::ld((typename D::T)(parts[k] & 0xffffu)) * a + b, act);
                float hi = activate(D::ld((typename D::T)(parts[k] >> 16)) * a + b, act);
                parts[k] = (unsigned)D::st(lo) | ((unsigned)D::st(hi) << 16);
            }
            *(uint4*)(y + i) = make_uint4(parts[0], parts[1], parts[2], parts[3]);
        }
        else
        {
            y[i] = D::st(activate(D::ld(x[i]) * a + b, act));
        }
    }
}

#define LENS_GN(SUFFIX, D) \
extern "C" __global__ void gn_stats_##SUFFIX(const D::T* x, float* stats, long long groupSize, float eps) \
{ gn_stats<D>(x, stats, groupSize, eps); } \
extern "C" __global__ void gn_apply_##SUFFIX(const D::T* x, D::T* y, const float* stats, const D::T* gamma, const D::T* beta, \
    const D::T* ss, long long ssStride, int C, int G, long long HW, long long total, int act) \
{ gn_apply<D>(x, y, stats, gamma, beta, ss, ssStride, C, G, HW, total, act); }

LENS_GN(f16, F16)
LENS_GN(bf16, BF16)
LENS_GN(f32, F32)
