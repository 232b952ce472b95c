// Dequantizes a packed int4 or int3 weight [N, K] into fp16 or bf16: w = (q - zero) * scale,
// computed in f32 and rounded once, the same numbers as hanpack.nn.dequantize_torch (and
// QuantizedTensor.dequantize) cast to the output dtype. Used for batches beyond the GEMV's
// (the dense weight then goes to cuBLAS), one layer at a time.
//
// One thread per 32-code block: it reads the block's BITS words and the group's scale and
// zero once and writes 32 consecutive outputs. The launcher checks the sizes.
#include "common.cuh"

template <int BITS, bool BF16>
__device__ __forceinline__ void hp_dequantize(
    const unsigned int* __restrict__ qweight,   // [N, n_blocks * BITS] words
    const unsigned short* __restrict__ scales,  // [N, n_groups] fp16
    const unsigned short* __restrict__ zeros,   // [N, n_groups] fp16
    unsigned short* __restrict__ out,           // [N, K]
    int N, int K, int group_size, int n_groups) {
    const int n_blocks = (K + HP_BLOCK - 1) / HP_BLOCK;
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)N * n_blocks) return;
    const int row = (int)(idx / n_blocks);
    const int blk = (int)(idx % n_blocks);
    unsigned int w[BITS];
    hp_load_block<BITS>(qweight + (size_t)row * n_blocks * BITS, blk, w);
    float q[HP_BLOCK];
    hp_decode<BITS>(w, q);
    const int base = blk * HP_BLOCK;
    const int g = base / group_size;
    const float s = hp_f16_to_f32(scales[(size_t)row * n_groups + g]);
    const float z = hp_f16_to_f32(zeros[(size_t)row * n_groups + g]);
    const int n = min(HP_BLOCK, K - base);
    unsigned short* o = out + (size_t)row * K + base;
#pragma unroll
    for (int i = 0; i < HP_BLOCK; ++i) {
        if (i < n) o[i] = hp_store<BF16>((q[i] - z) * s);
    }
}

#define HP_DEQUANTIZE_KERNEL(NAME, BITS, BF16)                                                       \
    extern "C" __global__ void NAME(const unsigned int* qweight, const unsigned short* scales,      \
                                    const unsigned short* zeros, unsigned short* out, int N, int K, \
                                    int group_size, int n_groups) {                                 \
        hp_dequantize<BITS, BF16>(qweight, scales, zeros, out, N, K, group_size, n_groups);         \
    }

HP_DEQUANTIZE_KERNEL(hanpack_dequantize_int4_f16, 4, false)
HP_DEQUANTIZE_KERNEL(hanpack_dequantize_int4_bf16, 4, true)
HP_DEQUANTIZE_KERNEL(hanpack_dequantize_int3_f16, 3, false)
HP_DEQUANTIZE_KERNEL(hanpack_dequantize_int3_bf16, 3, true)
