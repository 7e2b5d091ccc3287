// dequant.cpp — FP8 block dequantization on the thread pool: rows converted to float32 with the
// engine's bit-exact kernels, scaled in place, converted once more to the destination dtype.
#include "dequant.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "convert.h"
#include "thread_pool.h"

namespace warpload {
namespace {

// Output bytes a task writes: large enough that scheduling costs nothing, small enough that every
// worker gets several tasks on a 100 MB matrix.
constexpr uint64_t kTaskBytes = 1u << 20;

bool multiply_overflows(uint64_t a, uint64_t b, uint64_t* out) { return __builtin_mul_overflow(a, b, out); }

void check(const Fp8Matrix& m, size_t index) {
    const std::string where = "fp8 matrix " + std::to_string(index) + ": ";
    if (m.weight_dtype != DType::F8_E4M3 && m.weight_dtype != DType::F8_E5M2) {
        throw std::invalid_argument(where + "weights must be F8_E4M3 or F8_E5M2");
    }
    if (m.dst_dtype != DType::F32 && m.dst_dtype != DType::F16 && m.dst_dtype != DType::BF16) {
        throw std::invalid_argument(where + "the destination dtype must be F32, F16 or BF16");
    }
    uint64_t elements = 0, dst_bytes = 0, scales = 0;
    if (multiply_overflows(m.rows, m.cols, &elements) || multiply_overflows(elements, itemsize(m.dst_dtype), &dst_bytes) ||
        multiply_overflows(m.scale_rows, m.scale_cols, &scales)) {
        throw std::invalid_argument(where + "shape overflows");
    }
    if (m.weight_nbytes != elements) {
        throw std::invalid_argument(where + "weights hold " + std::to_string(m.weight_nbytes) + " bytes, " +
                                    std::to_string(m.rows) + " x " + std::to_string(m.cols) + " need " +
                                    std::to_string(elements));
    }
    if (m.dst_nbytes != dst_bytes) {
        throw std::invalid_argument(where + "the destination holds " + std::to_string(m.dst_nbytes) + " bytes, " +
                                    std::to_string(dst_bytes) + " needed");
    }
    if (m.scale_rows == 0 || m.scale_cols == 0 || m.num_scales != scales) {
        throw std::invalid_argument(where + "the scale grid has " + std::to_string(m.num_scales) + " scales for " +
                                    std::to_string(m.scale_rows) + " x " + std::to_string(m.scale_cols) + " blocks");
    }
    if (m.rows % m.scale_rows != 0 || m.cols % m.scale_cols != 0) {
        throw std::invalid_argument(where + "weight shape (" + std::to_string(m.rows) + ", " + std::to_string(m.cols) +
                                    ") not divisible by scale grid (" + std::to_string(m.scale_rows) + ", " +
                                    std::to_string(m.scale_cols) + ")");
    }
    if (elements > 0 && (m.weight == nullptr || m.dst == nullptr || m.scales == nullptr)) {
        throw std::invalid_argument(where + "null buffer");
    }
}

// Rows [first, last) of one matrix; `scratch` holds cols floats.
void dequantize_rows(const Fp8Matrix& m, uint64_t first, uint64_t last, std::vector<float>& scratch) {
    const uint64_t block_rows = m.rows / m.scale_rows;
    const uint64_t block_cols = m.cols / m.scale_cols;
    const size_t out_size = itemsize(m.dst_dtype);
    for (uint64_t row = first; row < last; ++row) {
        float* values = m.dst_dtype == DType::F32 ? reinterpret_cast<float*>(m.dst + row * m.cols * out_size)
                                                  : scratch.data();
        convert(m.weight + row * m.cols, m.weight_dtype, values, DType::F32, m.cols);
        const float* scale_row = m.scales + (row / block_rows) * m.scale_cols;
        for (uint64_t block = 0; block < m.scale_cols; ++block) {
            const float scale = scale_row[block];
            float* segment = values + block * block_cols;
            for (uint64_t j = 0; j < block_cols; ++j) segment[j] *= scale;
        }
        if (m.dst_dtype != DType::F32) convert(values, DType::F32, m.dst + row * m.cols * out_size, m.dst_dtype, m.cols);
    }
}

struct Task {
    size_t matrix;
    uint64_t first_row, last_row;
};

}  // namespace

void dequantize_fp8(const std::vector<Fp8Matrix>& matrices, size_t num_threads) {
    for (size_t i = 0; i < matrices.size(); ++i) check(matrices[i], i);
    std::vector<Task> tasks;
    for (size_t i = 0; i < matrices.size(); ++i) {
        const Fp8Matrix& m = matrices[i];
        if (m.rows == 0 || m.cols == 0) continue;
        const uint64_t row_bytes = m.cols * itemsize(m.dst_dtype);
        const uint64_t rows_per_task = std::max<uint64_t>(1, kTaskBytes / row_bytes);
        for (uint64_t first = 0; first < m.rows; first += rows_per_task) {
            tasks.push_back({i, first, std::min(m.rows, first + rows_per_task)});
        }
    }
    PoolLease pool(num_threads);
    pool.run(tasks.size(), [&](size_t index, size_t) {
        const Task& task = tasks[index];
        const Fp8Matrix& m = matrices[task.matrix];
        std::vector<float> scratch(m.dst_dtype == DType::F32 ? 0 : m.cols);
        dequantize_rows(m, task.first_row, task.last_row, scratch);
    });
}

}  // namespace warpload
