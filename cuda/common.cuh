// Shared by hanpack's CUDA kernels: the packed layouts and the fp16/bf16 conversions.
//
// The layouts are specified in rust/hanpack-core/src/quant/formats/mod.rs (the
// "hanpack-v2" packing); this file mirrors them:
//   * a weight [N, K] is N packed rows; a row is ceil(K / 32) blocks of 32 codes, each
//     block BITS little-endian u32 words (so every row and block is 4-byte aligned, and an
//     int4 block is one 16-byte vector);
//   * scales and zeros are fp16 [N, n_groups], group g covering inputs
//     g * group_size .. (g + 1) * group_size; group_size is a multiple of 32 (or K), so a
//     block never straddles two groups;
//   * a code q stands for w = (q - zero) * scale, computed in f32.
//
// Compiled at run time by NVRTC, which has no standard headers: the fp16 and bf16 values
// travel as their 16 bits (unsigned short) and are converted with PTX instructions
// instead of cuda_fp16.h / cuda_bf16.h. bf16 -> f32 is exact as a 16-bit shift.
#pragma once

#define HP_BLOCK 32

#ifndef HP_HOST_EMULATION  // tests/cuda_emulation.cpp runs these sources on the CPU with host versions
__device__ __forceinline__ float hp_f16_to_f32(unsigned short h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

__device__ __forceinline__ unsigned short hp_f32_to_f16(float f) {
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

__device__ __forceinline__ float hp_bf16_to_f32(unsigned short h) {
    return __uint_as_float(((unsigned int)h) << 16);
}

__device__ __forceinline__ unsigned short hp_f32_to_bf16(float f) {
    unsigned short h;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(f));  // sm_80 and later
    return h;
}
#endif

// Activations and outputs: fp16 (BF16 = false) or bf16 (BF16 = true) bits.
template <bool BF16>
__device__ __forceinline__ float hp_load(unsigned short h) {
    if constexpr (BF16) return hp_bf16_to_f32(h);
    else return hp_f16_to_f32(h);
}

template <bool BF16>
__device__ __forceinline__ unsigned short hp_store(float f) {
    if constexpr (BF16) return hp_f32_to_bf16(f);
    else return hp_f32_to_f16(f);
}

// The BITS words of block `blk` of a packed row. int4 blocks are 16 bytes at 16-byte
// aligned offsets (rows are n_blocks * 16 bytes): one vector load. int3 blocks are 12
// bytes: three word loads.
template <int BITS>
__device__ __forceinline__ void hp_load_block(const unsigned int* __restrict__ row, int blk, unsigned int (&w)[BITS]) {
    if constexpr (BITS == 4) {
        const uint4 v = __ldg(reinterpret_cast<const uint4*>(row) + blk);
        w[0] = v.x;
        w[1] = v.y;
        w[2] = v.z;
        w[3] = v.w;
    } else {
#pragma unroll
        for (int j = 0; j < BITS; ++j) w[j] = __ldg(row + blk * BITS + j);
    }
}

// Codes 0..31 of a block, as floats.
//   int4: byte j = q[2j] | q[2j+1] << 4, so word j holds q[8j + i] in bits 4i..4i+3.
//   int3: bytes 3t..3t+2 as a little-endian 24-bit u_t hold q[8t + k] in bits 3k..3k+2;
//         u_0..u_3 are cut from the three words.
template <int BITS>
__device__ __forceinline__ void hp_decode(const unsigned int (&w)[BITS], float (&q)[HP_BLOCK]) {
    static_assert(BITS == 3 || BITS == 4, "int3 and int4 only");
    if constexpr (BITS == 4) {
#pragma unroll
        for (int i = 0; i < HP_BLOCK; ++i) q[i] = (float)((w[i >> 3] >> (4 * (i & 7))) & 0xFu);
    } else {
        const unsigned int u[4] = {
            w[0] & 0xFFFFFFu,
            (w[0] >> 24) | ((w[1] & 0xFFFFu) << 8),
            (w[1] >> 16) | ((w[2] & 0xFFu) << 16),
            w[2] >> 8,
        };
#pragma unroll
        for (int i = 0; i < HP_BLOCK; ++i) q[i] = (float)((u[i >> 3] >> (3 * (i & 7))) & 7u);
    }
}
