// Runs hanpack's CUDA kernel sources (cuda/*.cu) on the CPU, for tests on machines without
// a GPU (tests/test_cuda_kernels.py compiles this file with g++ -std=c++20 -Icuda).
//
// The kernels' C++ is compiled as host code: every thread of a launch is a std::thread
// with its own threadIdx/blockIdx, warp shuffles exchange values through a per-warp
// barrier, and the PTX conversions are replaced by host ones with the same rounding
// (round to nearest even). What this checks is the kernels' logic (packed layouts,
// indexing, groups, short blocks, batches, the warp reduction), not the GPU's memory
// system or PTX: those need a GPU (the GPU tests in the same file).
//
// usage: cuda_emulation gemv|dequantize BITS f16|bf16 B N K GROUP_SIZE N_GROUPS QWEIGHT SCALES ZEROS X|- OUT
//   files are raw little-endian arrays: qweight uint8 [N, row_bytes], scales and zeros
//   fp16 [N, N_GROUPS], x fp16/bf16 [B, K]; OUT receives y [B, N] or w [N, K].
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#define HP_HOST_EMULATION
#define __device__
#define __global__
#define __forceinline__ inline
#define __launch_bounds__(n)

using std::min;

struct uint4 {
    unsigned int x, y, z, w;
};
struct Dim3 {
    unsigned int x = 0, y = 0, z = 0;
};
thread_local Dim3 threadIdx, blockIdx, blockDim;

template <class T>
inline T __ldg(const T* p) {
    return *p;
}

inline float __uint_as_float(unsigned int u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

inline float hp_f16_to_f32(unsigned short h) {
    _Float16 v;
    std::memcpy(&v, &h, 2);
    return (float)v;
}

inline unsigned short hp_f32_to_f16(float f) {
    const _Float16 v = (_Float16)f;  // round to nearest even, as cvt.rn.f16.f32
    unsigned short h;
    std::memcpy(&h, &v, 2);
    return h;
}

inline float hp_bf16_to_f32(unsigned short h) {
    return __uint_as_float(((unsigned int)h) << 16);
}

inline unsigned short hp_f32_to_bf16(float f) {  // round to nearest even, as cvt.rn.bf16.f32
    unsigned int u;
    std::memcpy(&u, &f, 4);
    if (std::isnan(f)) return (unsigned short)((u >> 16) | 0x40);
    u += 0x7FFFu + ((u >> 16) & 1u);
    return (unsigned short)(u >> 16);
}

// One barrier and one exchange slot per lane for each warp of the running block.
thread_local std::barrier<>* hp_warp_barrier;
thread_local float* hp_warp_slots;

inline float __shfl_xor_sync(unsigned int, float v, int offset) {
    const unsigned int lane = threadIdx.x & 31u;
    hp_warp_slots[lane] = v;
    hp_warp_barrier->arrive_and_wait();
    const float other = hp_warp_slots[lane ^ (unsigned int)offset];
    hp_warp_barrier->arrive_and_wait();
    return other;
}

#include "dequantize.cu"
#include "gemv.cu"

template <class F>
void launch(unsigned int grid, unsigned int block, F kernel) {
    for (unsigned int b = 0; b < grid; ++b) {
        const unsigned int warps = (block + 31) / 32;
        std::vector<std::unique_ptr<std::barrier<>>> barriers;
        std::vector<float> slots(warps * 32);
        for (unsigned int w = 0; w < warps; ++w) barriers.emplace_back(new std::barrier<>(32));
        std::vector<std::thread> threads;
        for (unsigned int t = 0; t < block; ++t) {
            threads.emplace_back([&, t] {
                threadIdx.x = t;
                blockIdx.x = b;
                blockDim.x = block;
                hp_warp_barrier = barriers[t / 32].get();
                hp_warp_slots = slots.data() + (t / 32) * 32;
                kernel();
            });
        }
        for (auto& th : threads) th.join();
    }
}

// The entry point called `name`, or nullptr.
template <class F>
F kernel_named(const std::string& name, std::initializer_list<std::pair<const char*, F>> kernels) {
    for (const auto& [n, f] : kernels)
        if (name == n) return f;
    return nullptr;
}

template <class T>
std::vector<T> read_file(const char* path) {
    std::ifstream f(path, std::ios::binary);
    std::vector<char> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    std::vector<T> out(bytes.size() / sizeof(T));
    std::memcpy(out.data(), bytes.data(), out.size() * sizeof(T));
    return out;
}

int main(int argc, char** argv) {
    if (argc != 14) {
        std::fprintf(stderr, "usage: %s gemv|dequantize BITS f16|bf16 B N K GROUP_SIZE N_GROUPS QWEIGHT SCALES ZEROS X|- OUT\n", argv[0]);
        return 2;
    }
    const std::string mode = argv[1], dtype = argv[3];
    const int bits = std::atoi(argv[2]), B = std::atoi(argv[4]), N = std::atoi(argv[5]), K = std::atoi(argv[6]);
    const int group_size = std::atoi(argv[7]), n_groups = std::atoi(argv[8]);
    auto qweight = read_file<unsigned int>(argv[9]);
    auto scales = read_file<unsigned short>(argv[10]);
    auto zeros = read_file<unsigned short>(argv[11]);
    const std::string name = "hanpack_" + mode + "_int" + std::to_string(bits) + "_" + dtype;
    std::vector<unsigned short> out;
    if (mode == "gemv") {
        auto x = read_file<unsigned short>(argv[12]);
        out.assign((size_t)B * N, 0);
        using Gemv = void (*)(const unsigned short*, const unsigned int*, const unsigned short*, const unsigned short*,
                              unsigned short*, int, int, int, int, int);
        const Gemv k = kernel_named<Gemv>(name, {{"hanpack_gemv_int4_f16", hanpack_gemv_int4_f16},
                                                 {"hanpack_gemv_int4_bf16", hanpack_gemv_int4_bf16},
                                                 {"hanpack_gemv_int3_f16", hanpack_gemv_int3_f16},
                                                 {"hanpack_gemv_int3_bf16", hanpack_gemv_int3_bf16}});
        if (!k) return 2;
        launch((N + HP_WARPS - 1) / HP_WARPS, HP_WARPS * 32, [&] {
            k(x.data(), qweight.data(), scales.data(), zeros.data(), out.data(), B, N, K, group_size, n_groups);
        });
    } else {
        out.assign((size_t)N * K, 0);
        using Dequantize = void (*)(const unsigned int*, const unsigned short*, const unsigned short*, unsigned short*, int,
                                    int, int, int);
        const Dequantize k = kernel_named<Dequantize>(name, {{"hanpack_dequantize_int4_f16", hanpack_dequantize_int4_f16},
                                                             {"hanpack_dequantize_int4_bf16", hanpack_dequantize_int4_bf16},
                                                             {"hanpack_dequantize_int3_f16", hanpack_dequantize_int3_f16},
                                                             {"hanpack_dequantize_int3_bf16", hanpack_dequantize_int3_bf16}});
        if (!k) return 2;
        const int threads = 256, total = N * ((K + 31) / 32);
        launch((total + threads - 1) / threads, threads, [&] {
            k(qweight.data(), scales.data(), zeros.data(), out.data(), N, K, group_size, n_groups);
        });
    }
    std::ofstream(argv[13], std::ios::binary).write(reinterpret_cast<const char*>(out.data()), out.size() * 2);
    return 0;
}
