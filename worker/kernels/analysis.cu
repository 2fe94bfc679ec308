// Fused CUDA kernels of the worker's analysis, one launch per stage for a whole batch of
// same-sized analysis planes (N × h × w f32 luma, row-major, frames back to back). They do
// what the CPU reference does (worker/src/ops/filters.rs, worker/src/ops/motion.rs), with
// the same border rule (edge pixels repeated, OpenCV's BORDER_REPLICATE) and the same
// definitions, so the CPU kernel is the reference these are checked against:
//
//   luma_downscale   raw interleaved 8-bit frames (RGB24, BGR24 or GRAY8) of N × H × W to
//                    BT.601 luma at the analysis size (H / factor × W / factor, the area
//                    mean of each factor × factor block), as worker/src/ops/staging.rs
//                    `area_luma` does on the CPU: the path for raw frames, which arrive at
//                    full size (JPEG frames are decoded to the analysis size on the CPU).
//   blur_statistics  5×5 Gaussian blur ([1 4 6 4 1]/16 each way, OpenCV's ksize 5 / sigma 0)
//                    from a shared-memory tile, and per frame Σluma, Σluma², Σblurred and
//                    Σ|luma − blurred| (→ contrast, mean luma, sharpness).
//   sobel_motion     3×3 Sobel magnitude of the blurred plane (OpenCV's ksize 3) and Σ of it
//                    (→ edge strength); the motion mask |blurred − background| ≥ threshold,
//                    its count and the rows / columns that hold a moving pixel (→ fraction
//                    and box); then the running-average update of the background in place
//                    (OpenCV's accumulateWeighted). Frames of one launch must belong to
//                    different channels: a channel's second frame needs the background its
//                    first one leaves, so the host launches one round per position.
//
// Only a few numbers per frame leave the device: 5 sums, the moving-pixel count, and one byte
// per row and per column. Sums are accumulated per block in f32 and added to per-frame f64
// totals with atomicAdd (sm_60 and later), so a 1080p frame's sums keep their precision.
//
// Built to PTX by scripts/build-kernels-ptx.sh (nvcc --ptx -arch=sm_90), for candle's custom
// ops (`CustomOp1::cuda_fwd`, loaded with `get_or_load_custom_func`).

#define TILE_W 32
#define TILE_H 8
#define BLUR_RADIUS 2
#define SOBEL_RADIUS 1

__device__ __forceinline__ int clamp_index(int value, int size) {
    return value < 0 ? 0 : (value >= size ? size - 1 : value);
}

// Copies the TILE_W × TILE_H pixels of `plane` this block covers into `tile`, with RADIUS more
// on each side (edge pixels repeated beyond the plane), and waits for the whole block.
template <int RADIUS>
__device__ void load_tile(const float *plane, float (*tile)[TILE_W + 2 * RADIUS], int width, int height) {
    const int x0 = blockIdx.x * TILE_W, y0 = blockIdx.y * TILE_H;
    for (int ty = threadIdx.y; ty < TILE_H + 2 * RADIUS; ty += TILE_H) {
        for (int tx = threadIdx.x; tx < TILE_W + 2 * RADIUS; tx += TILE_W) {
            const int sy = clamp_index(y0 + ty - RADIUS, height);
            const int sx = clamp_index(x0 + tx - RADIUS, width);
            tile[ty][tx] = plane[(size_t)sy * width + sx];
        }
    }
    __syncthreads();
}

// Sums `value` over the block (blockDim.x * blockDim.y ≤ 1024 threads) and adds the block's
// total to *total from one thread.
__device__ void block_sum_into(float value, double *total) {
    __shared__ float warp_sums[32];
    const int lane = (threadIdx.y * blockDim.x + threadIdx.x) & 31;
    const int warp = (threadIdx.y * blockDim.x + threadIdx.x) >> 5;
    for (int offset = 16; offset > 0; offset >>= 1) {
        value += __shfl_down_sync(0xffffffffu, value, offset);
    }
    __syncthreads();
    if (lane == 0) warp_sums[warp] = value;
    __syncthreads();
    if (warp == 0) {
        const int warps = (blockDim.x * blockDim.y + 31) >> 5;
        value = lane < warps ? warp_sums[lane] : 0.0f;
        for (int offset = 16; offset > 0; offset >>= 1) {
            value += __shfl_down_sync(0xffffffffu, value, offset);
        }
        if (lane == 0) atomicAdd(total, (double)value);
    }
}

// Launch: grid (ceil(w / 32), ceil(h / 8), N), block (32, 8), where w = W / factor and
// h = H / factor (the frame's last W % factor columns and H % factor rows are left out, as on
// the CPU). channels: 1 (gray), 3; red_first: 1 for RGB, 0 for BGR.
extern "C" __global__ void luma_downscale(const unsigned char *frames, float *luma, int full_width,
                                          int full_height, int channels, int red_first, int factor) {
    const int width = full_width / factor, height = full_height / factor;
    const int frame = blockIdx.z;
    const int x = blockIdx.x * blockDim.x + threadIdx.x, y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= width || y >= height) return;
    const unsigned char *source = frames + (size_t)frame * full_width * full_height * channels;
    const float red_weight = red_first ? 0.299f : 0.114f, blue_weight = red_first ? 0.114f : 0.299f;
    float sum = 0.0f;
    for (int dy = 0; dy < factor; ++dy) {
        const unsigned char *row = source + ((size_t)(y * factor + dy) * full_width + (size_t)x * factor) * channels;
        for (int dx = 0; dx < factor; ++dx) {
            const unsigned char *pixel = row + dx * channels;
            sum += channels == 1 ? (float)pixel[0]
                                 : red_weight * pixel[0] + 0.587f * pixel[1] + blue_weight * pixel[2];
        }
    }
    luma[(size_t)frame * width * height + (size_t)y * width + x] = sum / (float)(factor * factor);
}

// Launch: grid (ceil(w / 32), ceil(h / 8), N), block (32, 8).
// sums: N × 5 doubles, zeroed by the host: Σluma, Σluma², Σblurred, Σ|luma − blurred|, (Σ
// gradient magnitude, filled by sobel_motion).
extern "C" __global__ void blur_statistics(const float *luma, float *blurred, double *sums,
                                           int width, int height) {
    __shared__ float tile[TILE_H + 2 * BLUR_RADIUS][TILE_W + 2 * BLUR_RADIUS];
    __shared__ float across[TILE_H + 2 * BLUR_RADIUS][TILE_W];
    const int frame = blockIdx.z;
    const size_t plane = (size_t)width * height;
    const float *source = luma + frame * plane;
    const int x0 = blockIdx.x * TILE_W, y0 = blockIdx.y * TILE_H;
    const int x = x0 + threadIdx.x, y = y0 + threadIdx.y;

    load_tile<BLUR_RADIUS>(source, tile, width, height);
    const float k0 = 1.0f / 16.0f, k1 = 4.0f / 16.0f, k2 = 6.0f / 16.0f;
    for (int ty = threadIdx.y; ty < TILE_H + 2 * BLUR_RADIUS; ty += TILE_H) {
        const float *row = tile[ty] + threadIdx.x;
        across[ty][threadIdx.x] = k0 * (row[0] + row[4]) + k1 * (row[1] + row[3]) + k2 * row[2];
    }
    __syncthreads();

    float value = 0.0f, value_squared = 0.0f, smooth = 0.0f, detail = 0.0f;
    if (x < width && y < height) {
        const int ty = threadIdx.y + BLUR_RADIUS;
        const float out = k0 * (across[ty - 2][threadIdx.x] + across[ty + 2][threadIdx.x]) +
                          k1 * (across[ty - 1][threadIdx.x] + across[ty + 1][threadIdx.x]) +
                          k2 * across[ty][threadIdx.x];
        blurred[frame * plane + (size_t)y * width + x] = out;
        value = tile[ty][threadIdx.x + BLUR_RADIUS];
        value_squared = value * value;
        smooth = out;
        detail = fabsf(value - out);
    }
    double *frame_sums = sums + frame * 5;
    block_sum_into(value, frame_sums + 0);
    block_sum_into(value_squared, frame_sums + 1);
    block_sum_into(smooth, frame_sums + 2);
    block_sum_into(detail, frame_sums + 3);
}

// Launch: grid (ceil(w / 32), ceil(h / 8), N), block (32, 8).
// background: N × h × w, each frame's channel background gathered by the host (a channel's
// first frame: a copy of its blurred plane), updated in place.
// moving: N unsigned ints (zeroed); moving_rows: N × h bytes, moving_columns: N × w bytes
// (zeroed): 1 where the row / column holds a moving pixel.
extern "C" __global__ void sobel_motion(const float *blurred, float *background, double *sums,
                                        unsigned int *moving, unsigned char *moving_rows,
                                        unsigned char *moving_columns, int width, int height,
                                        float threshold, float rate) {
    __shared__ float tile[TILE_H + 2 * SOBEL_RADIUS][TILE_W + 2 * SOBEL_RADIUS];
    const int frame = blockIdx.z;
    const size_t plane = (size_t)width * height;
    const float *source = blurred + frame * plane;
    const int x0 = blockIdx.x * TILE_W, y0 = blockIdx.y * TILE_H;
    const int x = x0 + threadIdx.x, y = y0 + threadIdx.y;
    load_tile<SOBEL_RADIUS>(source, tile, width, height);

    float magnitude = 0.0f;
    unsigned int moved = 0;
    if (x < width && y < height) {
        const int tx = threadIdx.x + SOBEL_RADIUS, ty = threadIdx.y + SOBEL_RADIUS;
        // [-1 0 1] across smoothed [1 2 1] down, and [-1 0 1] down smoothed [1 2 1] across.
        const float gradient_x = (tile[ty - 1][tx + 1] + 2.0f * tile[ty][tx + 1] + tile[ty + 1][tx + 1]) -
                                 (tile[ty - 1][tx - 1] + 2.0f * tile[ty][tx - 1] + tile[ty + 1][tx - 1]);
        const float gradient_y = (tile[ty + 1][tx - 1] + 2.0f * tile[ty + 1][tx] + tile[ty + 1][tx + 1]) -
                                 (tile[ty - 1][tx - 1] + 2.0f * tile[ty - 1][tx] + tile[ty - 1][tx + 1]);
        magnitude = sqrtf(gradient_x * gradient_x + gradient_y * gradient_y);

        const size_t at = frame * plane + (size_t)y * width + x;
        const float current = tile[ty][tx], model = background[at];
        if (fabsf(current - model) >= threshold) {
            moved = 1;
            moving_rows[(size_t)frame * height + y] = 1;
            moving_columns[(size_t)frame * width + x] = 1;
        }
        background[at] = (1.0f - rate) * model + rate * current;
    }
    block_sum_into(magnitude, sums + frame * 5 + 4);
    // Moving pixels are rare and a warp's vote is cheap: one atomic per warp that saw any.
    const unsigned int warp_moved = __popc(__ballot_sync(0xffffffffu, moved));
    if (warp_moved && ((threadIdx.y * blockDim.x + threadIdx.x) & 31) == 0) {
        atomicAdd(moving + frame, warp_moved);
    }
}
