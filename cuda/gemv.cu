// W4A16 and W3A16 GEMV for batches of 1 to HP_MAX_BATCH rows: y[b, n] = sum_k x[b, k] * w[n, k]
// with w in hanpack's packed layout (common.cuh), x and y fp16 or bf16, f32 accumulation.
//
// At batch 1-8 the product is bound by reading the weight, so each packed byte is read
// once: one warp per output row, each lane one 32-code block per step (a warp reads 32
// consecutive blocks, 512 bytes of int4 or 384 of int3, per step), and all batch rows are
// accumulated from the same decoded block. Within a block (which lies in one group),
//   sum_i x_i * (q_i - z) * s = s * (sum_i x_i q_i - z * sum_i x_i),
// so the scale and zero cost two operations per block instead of two per weight.
// The launcher (python/hanpack/cuda_kernels.py) checks: 1 <= B <= HP_MAX_BATCH, K even,
// x 4-byte aligned and contiguous, group_size a multiple of 32 or K.
#include "common.cuh"

#define HP_MAX_BATCH 8
#define HP_WARPS 4  // rows per thread block of 128 threads

template <int BITS, bool BF16>
__device__ __forceinline__ void hp_gemv(
    const unsigned short* __restrict__ x,       // [B, K]
    const unsigned int* __restrict__ qweight,   // [N, n_blocks * BITS] words
    const unsigned short* __restrict__ scales,  // [N, n_groups] fp16
    const unsigned short* __restrict__ zeros,   // [N, n_groups] fp16
    unsigned short* __restrict__ y,             // [B, N]
    int B, int N, int K, int group_size, int n_groups) {
    const int lane = threadIdx.x & 31;
    const int row = blockIdx.x * HP_WARPS + (threadIdx.x >> 5);
    if (row >= N) return;  // whole warps leave together: the shuffles below stay full-warp
    const int n_blocks = (K + HP_BLOCK - 1) / HP_BLOCK;
    const unsigned int* wrow = qweight + (size_t)row * n_blocks * BITS;
    const unsigned short* srow = scales + (size_t)row * n_groups;
    const unsigned short* zrow = zeros + (size_t)row * n_groups;

    float acc[HP_MAX_BATCH];
#pragma unroll
    for (int b = 0; b < HP_MAX_BATCH; ++b) acc[b] = 0.0f;

    // The next block's words are loaded before this block is used, so that each lane has
    // two weight loads in flight: at batch 1 the rows' warps are too few per SM to hide
    // DRAM latency with one (e.g. 4096 rows are 1024 thread blocks, ~8 per SM on an H100).
    unsigned int next[BITS];
    if (lane < n_blocks) hp_load_block<BITS>(wrow, lane, next);
    for (int blk = lane; blk < n_blocks; blk += 32) {
        unsigned int w[BITS];
#pragma unroll
        for (int j = 0; j < BITS; ++j) w[j] = next[j];
        if (blk + 32 < n_blocks) hp_load_block<BITS>(wrow, blk + 32, next);
        float q[HP_BLOCK];
        hp_decode<BITS>(w, q);
        const int base = blk * HP_BLOCK;
        const int g = base / group_size;
        const float s = hp_f16_to_f32(srow[g]);
        const float z = hp_f16_to_f32(zrow[g]);
        const int n = min(HP_BLOCK, K - base);  // the last block of a row may be short
#pragma unroll
        for (int b = 0; b < HP_MAX_BATCH; ++b) {
            if (b >= B) break;
            const unsigned short* xb = x + (size_t)b * K + base;
            float dot = 0.0f, sum = 0.0f;
            if (n == HP_BLOCK) {
                // K is even and x 4-byte aligned, so pairs are one 32-bit load each.
                const unsigned int* xp = reinterpret_cast<const unsigned int*>(xb);
#pragma unroll
                for (int i = 0; i < HP_BLOCK / 2; ++i) {
                    const unsigned int pair = __ldg(xp + i);
                    const float x0 = hp_load<BF16>((unsigned short)(pair & 0xFFFFu));
                    const float x1 = hp_load<BF16>((unsigned short)(pair >> 16));
                    dot = fmaf(x0, q[2 * i], dot);
                    dot = fmaf(x1, q[2 * i + 1], dot);
                    sum += x0 + x1;
                }
            } else {
#pragma unroll
                for (int i = 0; i < HP_BLOCK; ++i) {
                    if (i < n) {
                        const float xi = hp_load<BF16>(__ldg(xb + i));
                        dot = fmaf(xi, q[i], dot);
                        sum += xi;
                    }
                }
            }
            acc[b] = fmaf(s, dot - z * sum, acc[b]);
        }
    }
#pragma unroll
    for (int b = 0; b < HP_MAX_BATCH; ++b) {
        if (b >= B) break;
        float v = acc[b];
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xFFFFFFFFu, v, off);
        if (lane == 0) y[(size_t)b * N + row] = hp_store<BF16>(v);
    }
}

#define HP_GEMV_KERNEL(NAME, BITS, BF16)                                                             \
    extern "C" __global__ void __launch_bounds__(HP_WARPS * 32) NAME(                               \
        const unsigned short* x, const unsigned int* qweight, const unsigned short* scales,         \
        const unsigned short* zeros, unsigned short* y, int B, int N, int K, int group_size,        \
        int n_groups) {                                                                             \
        hp_gemv<BITS, BF16>(x, qweight, scales, zeros, y, B, N, K, group_size, n_groups);           \
    }

HP_GEMV_KERNEL(hanpack_gemv_int4_f16, 4, false)
HP_GEMV_KERNEL(hanpack_gemv_int4_bf16, 4, true)
HP_GEMV_KERNEL(hanpack_gemv_int3_f16, 3, false)
HP_GEMV_KERNEL(hanpack_gemv_int3_bf16, 3, true)
