// Every Mamba layer of one batch-1 decode step in one persistent CUDA kernel (see persistent.py).
//
// One block per 16 channels, all blocks resident (a cooperative launch). Layer i is two
// phases with a grid barrier after each:
//   A: x -> RMSNorm -> this block's rows of in_proj (xi, z of its channels) -> conv -> SiLU ->
//      its share of x_proj(xc), added into dbc[i] (atomics)
//   B: dt_proj + softplus, the SSM update and y = C h + D xc, the SiLU(z) gate -> its share of
//      out_proj(y), added into the residual x (atomics)
// What makes it short: every block computes the RMSNorm itself (no block-wide reduction), one warp
// reduces one GEMV row with shuffles only, channel c's dt, state update and y live in one group of
// N lanes, and the weights of the next phase are loaded into registers before this phase waits.
// Arithmetic is float32 whatever the weights' dtype, as in MambaLM.step.

#include <cuda_runtime.h>
#ifndef PK_VARIANT
#define PK_VARIANT 0
#endif
#include <cuda_bf16.h>
#include <torch/extension.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

namespace {

constexpr int THREADS = 256;
constexpr int WARPS = THREADS / 32;
constexpr int MAX_DM = 1024;
constexpr int CPB = 16;  // channels per block: a 32-byte sector of each bf16 weight row
constexpr int MAX_P = 256;
constexpr int PARAMS = 10;  // per layer, in the order of persistent.py's LAYER_PARAMS

struct Args {
  const int64_t* layer_ptrs;    // (L, PARAMS) device pointers
  const void* emb;              // (V, DM), row stride emb_stride
  long long emb_stride;
  const int64_t* tok;           // (1,)
  float* x;                     // (DM,) the float32 residual
  float* dbc;                   // (L, PP) x_proj sums, zero between steps
  void* conv;                   // conv state of batch row 0: [l * conv_l + k * conv_k + c]
  long long conv_l, conv_k;
  float* ssm;                   // SSM state of batch row 0: [l * ssm_l + n * ssm_n + c]
  long long ssm_l, ssm_n;
  unsigned* sync;               // [0] barrier arrivals, [1] blocks done, [2] error flag
  int L, DM, DI, N, R, K, P, PP;
  float eps;
  unsigned max_spin;
};

__device__ __forceinline__ float to_f(float v) { return v; }
__device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename W> __device__ __forceinline__ W from_f(float v);
template <> __device__ __forceinline__ float from_f<float>(float v) { return v; }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) { return __float2bfloat16(v); }

// 8 consecutive elements (16-byte aligned for bf16, 32 for float) as floats, through the read-only path
template <typename W> struct Vec8;
template <> struct Vec8<__nv_bfloat16> {
  uint4 raw;
  __device__ __forceinline__ void load(const __nv_bfloat16* p) { raw = __ldg(reinterpret_cast<const uint4*>(p)); }
  __device__ __forceinline__ float get(int e) const {
    const __nv_bfloat16* h = reinterpret_cast<const __nv_bfloat16*>(&raw);
    return __bfloat162float(h[e]);
  }
};
template <> struct Vec8<float> {
  float4 a, b;
  __device__ __forceinline__ void load(const float* p) {
    a = __ldg(reinterpret_cast<const float4*>(p));
    b = __ldg(reinterpret_cast<const float4*>(p) + 1);
  }
  __device__ __forceinline__ float get(int e) const {
    const float* f = e < 4 ? &a.x : &b.x;
    return f[e & 3];
  }
};

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float group_sum(float v, int width) {  // over aligned groups of `width` lanes
  for (int o = width >> 1; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float silu(float v) { return v / (1.f + expf(-v)); }
__device__ __forceinline__ float softplus(float v) { return v > 20.f ? v : log1pf(expf(v)); }

// Thread 0 spins on an acquire load; the block barrier passes the acquire on (as cooperative
// groups' grid sync does). A spin past max_spin polls sets the error flag instead of hanging.
__device__ __forceinline__ void grid_arrive(unsigned* bar) {
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();
    atomicAdd(bar, 1u);
  }
}
__device__ __forceinline__ void grid_wait(unsigned* bar, unsigned target, unsigned max_spin, unsigned* err) {
  if (threadIdx.x == 0) {
    unsigned v, n = 0;
    while (true) {
      asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(bar) : "memory");
      if (v >= target) break;
      if (++n > max_spin) { atomicExch(err, 1u); break; }
    }
    __threadfence();
  }
  __syncthreads();
}

template <typename W> __device__ __forceinline__ const W* param(const Args& a, int layer, int j) {
  return reinterpret_cast<const W*>(a.layer_ptrs[layer * PARAMS + j]);
}
enum { NORM_W, IN_W, CONV_W, CONV_B, XPROJ_W, DT_W, DT_B, A_LOG, D_SKIP, OUT_W };

// Phase A's weights, in registers: the norm weights of this lane's columns, this warp's 4 in_proj
// rows (this lane's columns), one channel's conv weights and old state, half a row of x_proj.
template <typename W, int DMC> struct WeightsA {
  Vec8<W> nw[DMC];
  Vec8<W> rows[4][DMC];
  float cw[4], cb, cold[3];
  Vec8<W> wx;
  __device__ __forceinline__ void load(const Args& a, int layer, int c0) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, t = threadIdx.x;
    if (layer >= a.L) return;
    const W* nwp = param<W>(a, layer, NORM_W);
    const W* inw = param<W>(a, layer, IN_W);
#pragma unroll
    for (int k = 0; k < DMC; ++k) nw[k].load(nwp + 8 * (lane + 32 * k));
#pragma unroll
    for (int s = 0; s < 4; ++s) {
      const int q = warp + WARPS * s;  // local row: q < CPB is channel c0 + q's xi, else c0 + q - CPB's z
      const long long row = (q < CPB ? c0 + q : a.DI + c0 + q - CPB);
#pragma unroll
      for (int k = 0; k < DMC; ++k) rows[s][k].load(inw + row * a.DM + 8 * (lane + 32 * k));
    }
    if (t < CPB) {
      const W* cwp = param<W>(a, layer, CONV_W) + (long long)(c0 + t) * a.K;
      const W* cbp = param<W>(a, layer, CONV_B);
#pragma unroll
      for (int k = 0; k < 4; ++k) cw[k] = k < a.K ? to_f(cwp[k]) : 0.f;
      cb = cbp ? to_f(cbp[c0 + t]) : 0.f;
      const W* cs = reinterpret_cast<const W*>(a.conv) + layer * a.conv_l + c0 + t;
#pragma unroll
      for (int k = 0; k < 3; ++k) cold[k] = k + 1 < a.K ? to_f(cs[(k + 1) * a.conv_k]) : 0.f;
    }
    if (t < 2 * a.P) wx.load(param<W>(a, layer, XPROJ_W) + (long long)(t >> 1) * a.DI + c0 + 8 * (t & 1));
  }
};

// Phase B's weights and this thread's SSM state element (thread t: channel t / N, state t % N),
// and half of the 16-channel slice of out_proj rows t / 2 + 128 i.
template <typename W, int DMC> struct WeightsB {
  float dtw[8], dtb = 0.f, A = 0.f, dsk = 0.f, h = 0.f;  // A = -exp(A_log)
  Vec8<W> wo[2 * DMC];
  __device__ __forceinline__ void load(const Args& a, int layer, int c0) {
    const int t = threadIdx.x, c = t / a.N, n = t % a.N;
#pragma unroll
    for (int j = 0; j < 8; ++j) dtw[j] = 0.f;
    if (c < CPB) {
      const W* dtwp = param<W>(a, layer, DT_W) + (long long)(c0 + c) * a.R;
#pragma unroll
      for (int j = 0; j < 8; ++j) dtw[j] = n + a.N * j < a.R ? to_f(dtwp[n + a.N * j]) : 0.f;
      dtb = to_f(param<W>(a, layer, DT_B)[c0 + c]);
      A = -expf(to_f(param<W>(a, layer, A_LOG)[(long long)(c0 + c) * a.N + n]));
      dsk = to_f(param<W>(a, layer, D_SKIP)[c0 + c]);
      h = a.ssm[layer * a.ssm_l + n * a.ssm_n + c0 + c];
    }
    const W* wop = param<W>(a, layer, OUT_W) + c0 + 8 * (t & 1);
#pragma unroll
    for (int i = 0; i < 2 * DMC; ++i) wo[i].load(wop + (long long)((t >> 1) + 128 * i) * a.DI);
  }
};

// float4 reductions into global memory (one L2 operation for four floats on sm_90)
__device__ __forceinline__ void add4(float* dst, float4 v) {
#if __CUDA_ARCH__ >= 900
  atomicAdd(reinterpret_cast<float4*>(dst), v);
#else
  atomicAdd(dst, v.x); atomicAdd(dst + 1, v.y); atomicAdd(dst + 2, v.z); atomicAdd(dst + 3, v.w);
#endif
}

template <typename W, int DMC>
__global__ void __launch_bounds__(THREADS, 1) mamba_layers_kernel(const Args a) {
  __shared__ float xs[MAX_DM];
  __shared__ __align__(16) float outs[MAX_DM];  // this block's share of out_proj, then of x_proj
  __shared__ float rowres[2 * CPB];
  __shared__ float xcs[CPB];
  __shared__ float ys[CPB];
  __shared__ float dbcs[MAX_P];
  __shared__ bool last;
  const int t = threadIdx.x, lane = t & 31, warp = t >> 5;
  const int c0 = blockIdx.x * CPB;
  const unsigned G = gridDim.x;
  unsigned arrived = 0;
  WeightsA<W, DMC> wa;
  wa.load(a, 0, c0);
  for (int layer = 0; layer < a.L; ++layer) {
    WeightsB<W, DMC> wb;
#if PK_VARIANT == 1
    wb.load(a, 0, c0);
#else
    wb.load(a, layer, c0);
#endif
    // ---------------------------------------------------------------- phase A
#if PK_VARIANT != 2
    if (layer > 0) grid_wait(a.sync, arrived * G, a.max_spin, a.sync + 2);
#endif
#pragma unroll
    for (int k = 0; k < DMC; ++k) {
      const int m = t + THREADS * k;
      float v;
      if (layer == 0) {
        const W* e = reinterpret_cast<const W*>(a.emb) + a.tok[0] * a.emb_stride;
        v = to_f(e[m]);
        if (blockIdx.x == 0) a.x[m] = v;
      } else {
        v = __ldcg(a.x + m);
      }
      xs[m] = v;
    }
    __syncthreads();
    float ss = 0.f;
#pragma unroll
    for (int k = 0; k < DMC * 8; ++k) {
      const float v = xs[lane + 32 * k];
      ss += v * v;
    }
    const float r = rsqrtf(warp_sum(ss) / a.DM + a.eps);
    float hcol[DMC][8];
#pragma unroll
    for (int k = 0; k < DMC; ++k)
#pragma unroll
      for (int e = 0; e < 8; ++e) hcol[k][e] = xs[8 * (lane + 32 * k) + e] * r * wa.nw[k].get(e);
#pragma unroll
    for (int s = 0; s < 4; ++s) {
      float acc = 0.f;
#pragma unroll
      for (int k = 0; k < DMC; ++k)
#pragma unroll
        for (int e = 0; e < 8; ++e) acc += wa.rows[s][k].get(e) * hcol[k][e];
      acc = warp_sum(acc);
      if (lane == 0) rowres[warp + WARPS * s] = acc;
    }
    __syncthreads();
    if (t < CPB) {  // the conv window: the state's last K - 1 inputs and xi; the state shifts by one
      const float xi = rowres[t];
      W* cs = reinterpret_cast<W*>(a.conv) + layer * a.conv_l + c0 + t;
      float acc = wa.cb;
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        if (k < a.K) {
          const float v = k + 1 < a.K ? wa.cold[k < 3 ? k : 2] : xi;
          acc += wa.cw[k] * v;
          cs[k * a.conv_k] = from_f<W>(v);
        }
      }
      xcs[t] = silu(acc);
    }
    __syncthreads();
    {  // x_proj: two lanes per row, eight channels each (rows P .. PP - 1 are zero padding)
      float part = 0.f;
      if (t < 2 * a.P) {
#pragma unroll
        for (int e = 0; e < 8; ++e) part += wa.wx.get(e) * xcs[8 * (t & 1) + e];
      }
      part += __shfl_xor_sync(0xffffffffu, part, 1);
      if (t < 2 * a.PP && (t & 1) == 0) outs[t >> 1] = part;
    }
    __syncthreads();
    if (t < a.PP / 4) add4(a.dbc + layer * a.PP + 4 * t, reinterpret_cast<const float4*>(outs)[t]);
    grid_arrive(a.sync);
    ++arrived;
#if PK_VARIANT != 1
    wa.load(a, layer + 1, c0);  // the next layer's A weights load while B waits and computes
#endif
    // ---------------------------------------------------------------- phase B
#if PK_VARIANT != 2
    grid_wait(a.sync, arrived * G, a.max_spin, a.sync + 2);
#endif
    if (t < a.P) dbcs[t] = __ldcg(a.dbc + layer * a.PP + t);
    __syncthreads();
    {
      const int c = t / a.N, n = t % a.N;
      const bool live = c < CPB;  // whole groups of N lanes are live or not: the shuffles stay uniform
      float dt = 0.f;
#pragma unroll
      for (int j = 0; j < 8; ++j) dt += n + a.N * j < a.R ? wb.dtw[j] * dbcs[n + a.N * j] : 0.f;
      dt = softplus(group_sum(dt, a.N) + wb.dtb);
      const float xc = live ? xcs[c] : 0.f;
      const float hn = wb.h * expf(dt * wb.A) + dt * xc * dbcs[a.R + n];
      if (live) a.ssm[layer * a.ssm_l + n * a.ssm_n + c0 + c] = hn;
      const float y = group_sum(dbcs[a.R + a.N + n] * hn, a.N);
      if (live && n == 0) ys[c] = (y + wb.dsk * xc) * silu(rowres[CPB + c]);
    }
    __syncthreads();
#pragma unroll
    for (int i = 0; i < 2 * DMC; ++i) {  // out_proj: two lanes per row, eight channels each
      float o = 0.f;
#pragma unroll
      for (int e = 0; e < 8; ++e) o += wb.wo[i].get(e) * ys[8 * (t & 1) + e];
      o += __shfl_xor_sync(0xffffffffu, o, 1);
      if ((t & 1) == 0) outs[(t >> 1) + 128 * i] = o;
    }
    __syncthreads();
    if (t < a.DM / 4) add4(a.x + 4 * t, reinterpret_cast<const float4*>(outs)[t]);
    if (layer + 1 < a.L) {
      grid_arrive(a.sync);
      ++arrived;
    }
  }
  // the last block out zeroes the x_proj sums and the counters for the next step
  __syncthreads();
  if (t == 0) {
    __threadfence();
    last = atomicAdd(a.sync + 1, 1u) == G - 1;
  }
  __syncthreads();
  if (last) {
    __threadfence();
    for (int i = t; i < a.L * a.PP; i += THREADS) a.dbc[i] = 0.f;
    if (t == 0) {
      a.sync[0] = 0;
      a.sync[1] = 0;
    }
  }
}

template <typename W, int DMC> void launch(const Args& a, int grid, cudaStream_t stream) {
  void* kernel_args[] = {const_cast<Args*>(&a)};
  auto kernel = mamba_layers_kernel<W, DMC>;
  C10_CUDA_CHECK(cudaLaunchCooperativeKernel(reinterpret_cast<void*>(kernel), dim3(grid), dim3(THREADS), kernel_args, 0, stream));
}

template <typename W> void by_dmc(const Args& a, int grid, cudaStream_t s, int dmc) {
  switch (dmc) {
    case 1: return launch<W, 1>(a, grid, s);
    case 2: return launch<W, 2>(a, grid, s);
    case 3: return launch<W, 3>(a, grid, s);
    case 4: return launch<W, 4>(a, grid, s);
  }
  TORCH_CHECK(false, "d_model must be 256, 512, 768 or 1024");
}

}  // namespace

void mamba_layers(torch::Tensor layer_ptrs, torch::Tensor emb, torch::Tensor tok, torch::Tensor x, torch::Tensor dbc,
                  torch::Tensor conv, torch::Tensor ssm, torch::Tensor sync, int64_t n_state, int64_t dt_rank,
                  double eps, int64_t max_spin) {
  // conv: (L, B, K, DI) and ssm: (L, B, N, DI) views, batch row 0 used
  Args a;
  a.layer_ptrs = layer_ptrs.data_ptr<int64_t>();
  a.emb = emb.data_ptr();
  a.emb_stride = emb.stride(0);
  a.tok = tok.data_ptr<int64_t>();
  a.x = x.data_ptr<float>();
  a.dbc = dbc.data_ptr<float>();
  a.conv = conv.data_ptr();
  a.conv_l = conv.stride(0);
  a.conv_k = conv.stride(2);
  a.ssm = ssm.data_ptr<float>();
  a.ssm_l = ssm.stride(0);
  a.ssm_n = ssm.stride(2);
  a.sync = reinterpret_cast<unsigned*>(sync.data_ptr<int32_t>());
  a.L = conv.size(0);
  a.K = conv.size(2);
  a.DI = conv.size(3);
  a.DM = x.size(-1);
  a.N = n_state;
  a.R = dt_rank;
  a.P = dt_rank + 2 * n_state;
  a.PP = dbc.size(-1);
  a.eps = static_cast<float>(eps);
  a.max_spin = static_cast<unsigned>(max_spin);
  TORCH_CHECK(a.DI % CPB == 0 && a.DM % 256 == 0 && a.DM <= MAX_DM && a.PP <= MAX_P && 2 * a.PP <= THREADS,
              "shapes the persistent kernel does not take");
  const int grid = a.DI / CPB;
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  TORCH_CHECK(emb.scalar_type() == at::kBFloat16, "the persistent kernel takes bfloat16 weights");
  by_dmc<__nv_bfloat16>(a, grid, stream, a.DM / 256);
}
