#include "backend/cuda/cuda_backend.h"

#include <nvtx3/nvToolsExt.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "backend/cpu/cpu_kernels.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels.h"
#include "util/parallel_copy.h"

namespace nanoinfer::cuda {
namespace {

constexpr double kMiB = 1024.0 * 1024.0;

int64_t numel_of(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// Device memory owned by a shared_ptr, so Tensor views keep it alive.
Tensor device_tensor(std::vector<int64_t> shape, DType dtype) {
  const size_t bytes = dtype_nbytes(dtype, numel_of(shape));  // (blocks: whole blocks)
  void* p = nullptr;
  if (bytes > 0) {
    const cudaError_t e = cudaMalloc(&p, bytes);
    if (e == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();
      size_t free_b = 0, total_b = 0;
      NI_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
      char msg[320];
      std::snprintf(
          msg, sizeof(msg),
          "CUDA out of memory: a %s tensor %s asked for %zu bytes (%.1f MiB); the GPU has "
          "%zu bytes (%.1f MiB) free of %.1f MiB",
          dtype_name(dtype), shape_string(shape).c_str(), bytes, bytes / kMiB, free_b,
          free_b / kMiB, total_b / kMiB);
      fail(msg);
    }
    NI_CUDA_CHECK(e);
  }
  std::shared_ptr<void> owner(p, [](void* q) {
    if (q != nullptr) cudaFree(q);
  });
  return {dtype, std::move(shape), p, std::move(owner), Device::Cuda};
}

int next_pow2(int v) {
  int p = 1;
  while (p < v) p *= 2;
  return p;
}

// Field offsets (in i32 words) of the static batch buffer.
struct BatchLayout {
  int64_t token_ids, positions, seq_of_token, q_index, slots, logit_rows, cu_seqlens, context_lens,
      tree_offsets, block_tables, tree_mask, total;
  BatchLayout(int tokens, int seqs, int stride, int64_t mask_words) {
    int64_t o = 0;
    auto take = [&o](int64_t n) {
      const int64_t at = o;
      o += (n + 31) / 32 * 32;  // 128-byte aligned fields
      return at;
    };
    token_ids = take(tokens);
    positions = take(tokens);
    seq_of_token = take(tokens);
    q_index = take(tokens);
    slots = take(tokens);
    logit_rows = take(tokens);
    cu_seqlens = take(seqs + 1);
    context_lens = take(seqs);
    tree_offsets = take(seqs);
    block_tables = take(int64_t{seqs} * stride);
    tree_mask = take(mask_words);
    total = o;
  }
};

}  // namespace

int decode_bucket(int seqs) {
  static constexpr int kBuckets[] = {1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 160, 192, 224, 256};
  for (int b : kBuckets)
    if (seqs <= b) return b;
  return (seqs + 63) / 64 * 64;
}

// NVTX range around every op; with profiling on, CUDA events around it as well.
class CudaBackend::OpScope {
 public:
  OpScope(CudaBackend& be, std::string name) : be_(be), name_(std::move(name)) {
    nvtxRangePushA(name_.c_str());
    if (be_.profiling_) {
      start_ = be_.take_event();
      NI_CUDA_CHECK(cudaEventRecord(start_, be_.stream_));
    }
  }
  ~OpScope() {
    if (start_ != nullptr) {
      cudaEvent_t stop = be_.take_event();
      cudaEventRecord(stop, be_.stream_);
      be_.pending_.push_back({name_, be_.meta_.profiled_decode, start_, stop});
    }
    nvtxRangePop();
  }
  OpScope(const OpScope&) = delete;
  OpScope& operator=(const OpScope&) = delete;

 private:
  CudaBackend& be_;
  std::string name_;
  cudaEvent_t start_ = nullptr;
};

CudaBackend::CudaBackend(DType compute_dtype, bool keep_blocks)
    : dtype_(compute_dtype), keep_blocks_(keep_blocks) {
  if (dtype_ != DType::F32 && dtype_ != DType::BF16)
    fail(std::string("the CUDA backend computes in f32 or bf16, not ") + dtype_name(dtype_));
  NI_CUDA_CHECK(cudaGetDevice(&device_));
  NI_CUDA_CHECK(cudaDeviceGetAttribute(&sm_count_, cudaDevAttrMultiProcessorCount, device_));
  NI_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  NI_CUDA_CHECK(cudaEventCreateWithFlags(&upload_done_, cudaEventDisableTiming));
  NI_CUDA_CHECK(cudaEventRecord(upload_done_, stream_));
  NI_CUDA_CHECK(cudaEventCreateWithFlags(&lists_done_, cudaEventDisableTiming));
  NI_CUDA_CHECK(cudaEventRecord(lists_done_, stream_));
  gemm_ = std::make_unique<LtGemm>();
}

CudaBackend::~CudaBackend() {
  cudaStreamSynchronize(stream_);
  drop_graphs();
  for (const PendingOp& p : pending_) {
    cudaEventDestroy(p.start);
    cudaEventDestroy(p.stop);
  }
  for (cudaEvent_t e : free_events_) cudaEventDestroy(e);
  cudaEventDestroy(upload_done_);
  cudaEventDestroy(lists_done_);
  for (cudaEvent_t e : staged_)
    if (e != nullptr) cudaEventDestroy(e);
  gemm_.reset();
  cudaStreamDestroy(stream_);
}

cudaEvent_t CudaBackend::take_event() {
  if (free_events_.empty()) {
    cudaEvent_t e = nullptr;
    NI_CUDA_CHECK(cudaEventCreate(&e));
    return e;
  }
  cudaEvent_t e = free_events_.back();
  free_events_.pop_back();
  return e;
}

Tensor CudaBackend::alloc(std::vector<int64_t> shape, DType dtype) {
  if (capturing_)
    fail("a device allocation inside a captured CUDA-graph step (" + shape_string(shape) +
         "): every buffer must be sized by the step's eager run");
  ++alloc_epoch_;
  return device_tensor(std::move(shape), dtype);
}

int64_t CudaBackend::free_memory() const {
  size_t free_b = 0, total_b = 0;
  NI_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  return static_cast<int64_t>(free_b);
}

// Host bytes (often a fresh file mapping) to the device through two pinned slices: the threads
// copy slice i + 1 out of the host memory while slice i is on its way, where a pageable
// cudaMemcpy stages through the driver's buffer on one thread, page faults included. An 8B
// safetensors checkpoint, page cache hot, H200 (docs/perf.md): 11.7 -> 10.0 s of load with the
// fused matrices still stacked on the host first; 0.74 s since upload_rows.
constexpr size_t kStagingSlice = size_t{32} << 20;

void CudaBackend::copy_to_device(void* dst, const void* src, size_t bytes) {
  if (!staging_) {
    void* h = nullptr;
    NI_CUDA_CHECK(cudaMallocHost(&h, 2 * kStagingSlice));
    staging_ = std::shared_ptr<void>(h, [](void* q) { cudaFreeHost(q); });
    for (cudaEvent_t& e : staged_)
      NI_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  }
  for (size_t off = 0, i = 0; off < bytes; off += kStagingSlice, ++i) {
    const size_t n = std::min(kStagingSlice, bytes - off);
    auto* slice = static_cast<uint8_t*>(staging_.get()) + (i % 2) * kStagingSlice;
    NI_CUDA_CHECK(cudaEventSynchronize(staged_[i % 2]));  // its last copy has left
    parallel_copy(slice, static_cast<const uint8_t*>(src) + off, n);
    NI_CUDA_CHECK(cudaMemcpyAsync(static_cast<uint8_t*>(dst) + off, slice, n,
                                  cudaMemcpyHostToDevice, stream_));
    NI_CUDA_CHECK(cudaEventRecord(staged_[i % 2], stream_));
  }
}

bool CudaBackend::keeps(const Tensor& host) const {
  return keep_blocks_ && dtype_ == DType::BF16 && host.rank() == 2 && quant_kept(host.dtype());
}

Tensor CudaBackend::alloc_widened(DType host_dt, std::vector<int64_t> shape, DType dtype) {
  if (keep_blocks_ || dtype_ != DType::BF16 || !quant_kept(host_dt))
    return alloc(std::move(shape), dtype);
  try {
    return alloc(std::move(shape), dtype);
  } catch (const Error& e) {  // (out of memory: the only error an upload's alloc raises)
    fail(std::string(e.what()) + "; it would hold a GGUF " + dtype_name(host_dt) +
         " matrix widened to bf16: keep_blocks (--keep-blocks) keeps Q8_0, Q4_0, Q4_1, Q4_K, Q5_K "
         "and Q6_K "
         "matrices as blocks (an 8B Q4_K_M: 5.5 GB instead of 16)");
  }
}

Tensor CudaBackend::upload(const Tensor& host, DType dtype) {
  if (keeps(host)) return upload_blocks({host});
  Tensor out = alloc_widened(host.dtype(), host.shape(), dtype);
  upload_into(host, out);
  // Ready on return, for any stream. (The host bytes are free already: copy_to_device copies them
  // into the pinned slices before it returns; the converting paths synchronised once already.)
  NI_CUDA_CHECK(cudaStreamSynchronize(stream_));
  return out;
}

// Each part goes straight into its rows of the device tensor: no stacked copy on the host.
Tensor CudaBackend::upload_rows(const std::vector<Tensor>& parts, DType dtype) {
  NI_ASSERT(!parts.empty() && parts[0].rank() == 2);
  int64_t rows = 0;
  for (const Tensor& p : parts) {
    NI_ASSERT(p.rank() == 2 && p.dim(1) == parts[0].dim(1));
    rows += p.dim(0);
  }
  // Parts of one kept format stay blocks; mixed ones (llama.cpp's Q4_K_M gives some layers a Q6_K
  // v) are widened part by part.
  if (keeps(parts[0]) && std::all_of(parts.begin(), parts.end(), [&](const Tensor& p) {
        return p.dtype() == parts[0].dtype();
      }))
    return upload_blocks(parts);
  Tensor out = alloc_widened(parts[0].dtype(), {rows, parts[0].dim(1)}, dtype);
  int64_t r0 = 0;
  for (const Tensor& p : parts) {
    Tensor dst = out.rows(r0, r0 + p.dim(0));
    upload_into(p, dst);
    r0 += p.dim(0);
  }
  NI_CUDA_CHECK(cudaStreamSynchronize(stream_));
  return out;
}

// Block matrices of one format stacked by rows, as stored, then repacked on the device into the
// layout the block kernels read (the file's bytes through a scratch copy of the same size).
Tensor CudaBackend::upload_blocks(const std::vector<Tensor>& parts) {
  const DType dt = parts[0].dtype();
  int64_t rows = 0;
  for (const Tensor& p : parts) rows += p.dim(0);
  Tensor out = alloc({rows, parts[0].dim(1)}, dt);
  const Tensor raw = device_tensor(out.shape(), dt);
  int64_t r0 = 0;
  for (const Tensor& p : parts) {
    copy_to_device(raw.rows(r0, r0 + p.dim(0)).data(), p.data(), p.nbytes());
    r0 += p.dim(0);
  }
  repack_blocks(dt, raw.data(), static_cast<int64_t>(out.nbytes() / dtype_size(dt)), out.data(),
                stream_);
  NI_CUDA_CHECK(cudaStreamSynchronize(stream_));  // before `raw` is freed
  return out;
}

void CudaBackend::upload_into(const Tensor& host, Tensor& out) {
  NI_ASSERT(host.device() == Device::Cpu && host.numel() == out.numel());
  const DType dtype = out.dtype();
  const auto plain = [](DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; };
  if (!plain(dtype))
    fail(std::string("the CUDA backend holds f32, f16 or bf16 tensors, not ") + dtype_name(dtype));
  if (host.dtype() == dtype) {
    copy_to_device(out.data(), host.data(), host.nbytes());
  } else if (dtype_block(host.dtype()) > 1) {
    // GGUF blocks (an mmap view): widened to f32 on the host a slice of rows at a time, as the
    // loader's dequantisation does, so that no whole f32 copy of the model is ever made.
    NI_ASSERT(host.rank() == 2);
    const int64_t rows = host.dim(0), K = host.dim(1);
    const int64_t slice = std::max<int64_t>(1, (int64_t{16} << 20) / (4 * K));  // 16 MB of f32
    std::vector<float> wide(static_cast<size_t>(std::min(rows, slice) * K));
    Tensor raw = device_tensor({std::min(rows, slice), K}, DType::F32);
    const size_t row_bytes = dtype_nbytes(host.dtype(), K);
    for (int64_t r0 = 0; r0 < rows; r0 += slice) {
      const int64_t n = std::min(slice, rows - r0);
      const auto* src = static_cast<const uint8_t*>(host.row(r0).data());
      // On every core: one thread took ~5 s of a 6.5 s load of an 8B Q4_K_M GGUF (H200 host).
#pragma omp parallel for schedule(static)
      for (int64_t r = 0; r < n; ++r)
        cpu::dequantize_rows(host.dtype(), src + r * row_bytes, 1, K, wide.data() + r * K);
      copy_to_device(raw.data(), wide.data(), sizeof(float) * n * K);
      // (`wide` is free again: copied out; `raw`'s next fill queues behind this conversion.)
      convert(DType::F32, raw.data(), dtype, out.row(r0).data(), n * K, stream_);
    }
    NI_CUDA_CHECK(cudaStreamSynchronize(stream_));  // before `raw` is freed
  } else {
    if (!plain(host.dtype()))
      fail(std::string("the CUDA backend cannot upload ") + dtype_name(host.dtype()) + " tensors");
    Tensor raw = device_tensor(host.shape(), host.dtype());
    copy_to_device(raw.data(), host.data(), host.nbytes());
    convert(host.dtype(), raw.data(), dtype, out.data(), host.numel(), stream_);
    NI_CUDA_CHECK(cudaStreamSynchronize(stream_));  // before `raw` is freed
  }
}

void CudaBackend::to_host_f32(const Tensor& src, std::vector<float>& dst) {
  const size_t n = static_cast<size_t>(src.numel());
  dst.resize(n);
  if (dtype_block(src.dtype()) > 1) {  // kept blocks: their widened values
    const Tensor wide = device_tensor(src.shape(), DType::F32);
    dequant_rows(src.dtype(), src.data(), src.dim(0), src.dim(1), nullptr, src.dim(0), DType::F32,
                 wide.data(), stream_);
    to_host_f32(wide, dst);
    return;
  }
  if (src.dtype() == DType::F32) {
    NI_CUDA_CHECK(cudaMemcpyAsync(dst.data(), src.data(), n * sizeof(float), cudaMemcpyDeviceToHost,
                                  stream_));
    NI_CUDA_CHECK(cudaStreamSynchronize(stream_));
  } else {
    NI_ASSERT(src.dtype() == DType::BF16);
    std::vector<uint16_t> raw(n);
    NI_CUDA_CHECK(cudaMemcpyAsync(raw.data(), src.data(), n * sizeof(uint16_t),
                                  cudaMemcpyDeviceToHost, stream_));
    NI_CUDA_CHECK(cudaStreamSynchronize(stream_));
    for (size_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(raw[i]);
  }
  if (profiling_) collect_profile();
}

bool CudaBackend::pick_to_host(const Tensor& logits, std::span<const RowPick> rows,
                               std::span<const LogitEdit> edits, std::vector<int32_t>& ids) {
  const int64_t R = logits.dim(0);
  NI_ASSERT(static_cast<int64_t>(rows.size()) == R);
  // Lazily sized (an empty Tensor's numel() is 1, so empty() is checked too), outside any graph,
  // so without an allocation epoch (device_tensor, not alloc).
  if (pick_ids_.empty() || pick_ids_.numel() < R) pick_ids_ = device_tensor({R}, DType::I32);
  cuda::prepare_pick_kernels();  // (outside the profiled ops)
  edit_logits(logits, edits);
  if (std::all_of(rows.begin(), rows.end(), [](const RowPick& r) { return r.temperature <= 0; }))
    argmax_rows(logits, pick_ids_);
  else
    sample_rows(logits, rows, pick_ids_);
  if (pick_host_cap_ < R) {
    void* h = nullptr;
    NI_CUDA_CHECK(cudaMallocHost(&h, static_cast<size_t>(R) * sizeof(int32_t)));
    pick_host_ = std::shared_ptr<void>(h, [](void* q) { cudaFreeHost(q); });
    pick_host_cap_ = R;
  }
  NI_CUDA_CHECK(cudaMemcpyAsync(pick_host_.get(), pick_ids_.data(),
                                static_cast<size_t>(R) * sizeof(int32_t), cudaMemcpyDeviceToHost,
                                stream_));
  NI_CUDA_CHECK(cudaStreamSynchronize(stream_));
  const auto* host = static_cast<const int32_t*>(pick_host_.get());
  ids.assign(host, host + R);
  if (profiling_) collect_profile();
  return true;
}

void CudaBackend::gather_to_host(const Tensor& x, std::span<const int32_t> flat,
                                 std::vector<float>& out) {
  NI_ASSERT(x.dtype() == DType::F32);
  const auto n = static_cast<int64_t>(flat.size());
  out.resize(flat.size());
  if (n == 0) return;
  if (gather_buf_.empty() || gather_buf_.numel() < 2 * n)
    gather_buf_ = device_tensor({2 * n}, DType::I32);
  auto* idx = static_cast<int32_t*>(gather_buf_.data());
  auto* values = reinterpret_cast<float*>(idx + n);
  NI_CUDA_CHECK(cudaMemcpyAsync(idx, flat.data(), static_cast<size_t>(n) * sizeof(int32_t),
                                cudaMemcpyHostToDevice, stream_));
  cuda::gather_rows(DType::F32, x.data(), idx, static_cast<int>(n), 1, values, stream_);
  NI_CUDA_CHECK(cudaMemcpyAsync(out.data(), values, static_cast<size_t>(n) * sizeof(float),
                                cudaMemcpyDeviceToHost, stream_));
  NI_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

bool CudaBackend::beam_rows_to_host(const Tensor& logits, int n, std::vector<BeamRow>& rows) {
  NI_ASSERT(logits.dtype() == DType::F32 && n > 0);
  const int64_t R = logits.dim(0), V = logits.dim(1);
  n = static_cast<int>(std::min<int64_t>(n, V));
  // One buffer of 4-byte words: R float2 stats, then R x n values, then R x n ids.
  const int64_t words = R * (2 + 2 * int64_t{n});
  if (beam_out_.empty() || beam_out_.numel() < words)
    beam_out_ = device_tensor({std::max<int64_t>(words, 1)}, DType::I32);
  auto* base = static_cast<int32_t*>(beam_out_.data());
  cuda::prepare_pick_kernels();
  const int blocks = cuda::row_blocks(static_cast<int>(R));  // (outside the profiled op)
  {
    OpScope op(*this, "beam_rows");
    cuda::beam_rows(logits.as<const float>(), static_cast<int>(R), static_cast<int>(V), n,
                    reinterpret_cast<float2*>(base), reinterpret_cast<float*>(base + 2 * R),
                    base + 2 * R + R * n, blocks, stream_);
  }
  std::vector<int32_t> host(static_cast<size_t>(words));
  if (words > 0)
    NI_CUDA_CHECK(cudaMemcpyAsync(host.data(), base, host.size() * sizeof(int32_t),
                                  cudaMemcpyDeviceToHost, stream_));
  NI_CUDA_CHECK(cudaStreamSynchronize(stream_));
  if (profiling_) collect_profile();
  rows.assign(static_cast<size_t>(R), BeamRow{});
  for (int64_t r = 0; r < R; ++r) {
    BeamRow& b = rows[static_cast<size_t>(r)];
    std::memcpy(&b.max, &host[2 * r], sizeof(float));
    std::memcpy(&b.lse, &host[2 * r + 1], sizeof(float));
    for (int64_t j = 0; j < n; ++j) {
      BeamRow::Token t{};
      std::memcpy(&t.logit, &host[2 * R + r * n + j], sizeof(float));
      t.id = host[2 * R + R * n + r * n + j];
      b.best.push_back(t);
    }
    std::sort(b.best.begin(), b.best.end(), BeamRow::Token::before);
  }
  return true;
}

void CudaBackend::synchronize() {
  NI_CUDA_CHECK(cudaStreamSynchronize(stream_));
  if (profiling_) collect_profile();
}

// The layout follows the step's block-table stride, but the buffer is only replaced when it
// grows: a stride that comes back (a sequence crossing a power of two of blocks in every call)
// finds its graphs still valid.
void CudaBackend::ensure_batch_capacity(int tokens, int seqs, int stride, int64_t mask_words) {
  bt_stride_ = stride;
  if (tokens <= cap_tokens_ && seqs <= cap_seqs_ && mask_words <= cap_mask_words_ &&
      !batch_dev_.empty() &&
      BatchLayout(cap_tokens_, cap_seqs_, stride, cap_mask_words_).total <= batch_dev_.numel())
    return;
  // The capacities are kept once both buffers have them (an allocation that fails leaves the
  // old ones, which the next step's check then holds to).
  const int cap_tokens = std::max({tokens, cap_tokens_, 64});
  const int cap_seqs = std::max({seqs, cap_seqs_, 16});
  const int64_t cap_mask_words = std::max(mask_words, cap_mask_words_);
  const BatchLayout lay(cap_tokens, cap_seqs, bt_stride_, cap_mask_words);
  NI_CUDA_CHECK(cudaEventSynchronize(upload_done_));
  void* h = nullptr;
  NI_CUDA_CHECK(cudaMallocHost(&h, static_cast<size_t>(lay.total) * sizeof(int32_t)));
  std::shared_ptr<void> host(h, [](void* q) { cudaFreeHost(q); });
  batch_dev_ = alloc({lay.total}, DType::I32);
  batch_host_ = std::move(host);
  cap_tokens_ = cap_tokens;
  cap_seqs_ = cap_seqs;
  cap_mask_words_ = cap_mask_words;
}

DeviceBatch CudaBackend::upload_batch(const Batch& b) {
  if (rope_dim_ == 0) fail("upload_rope must come before the first batch");
  const int T = b.num_tokens(), B = b.num_seqs();
  for (int t = 0; t < T; ++t) {
    if (b.positions[t] < 0 || b.positions[t] >= rope_positions_)
      fail("position " + std::to_string(b.positions[t]) + " is outside the RoPE table (" +
           std::to_string(rope_positions_) + " positions)");
  }
  BatchMeta meta;
  meta.decode = b.is_decode();
  meta.profiled_decode = b.profiled_as_decode();
  for (int s = 0; s < B; ++s)
    meta.max_new = std::max(meta.max_new, b.cu_seqlens[s + 1] - b.cu_seqlens[s]);
  meta.token_ids = b.token_ids;
  // Decode batches grow to their bucket with dummy sequences (no cache entries, no slot).
  const int Bp = meta.decode ? decode_bucket(B) : B;
  const int Tp = meta.decode ? Bp : T;
  const int R = meta.decode ? Bp : static_cast<int>(b.logit_rows.size());
  const int64_t mask_words = (static_cast<int64_t>(b.tree_mask.size()) + 3) / 4;
  ensure_batch_capacity(Tp, Bp, std::max(16, next_pow2(std::max(b.max_blocks, 1))), mask_words);
  NI_CUDA_CHECK(cudaEventSynchronize(upload_done_));  // the last copy out of the staging area

  // The fields laid out for this batch's sizes (within the buffer's capacity), so that one copy
  // moves them all: a decode step's layout depends only on its bucket and block-table stride,
  // which key its graph, so a replay finds its fields where the capture saw them.
  const BatchLayout lay(Tp, Bp, bt_stride_, mask_words);
  auto* host = static_cast<int32_t*>(batch_host_.get());
  auto* dev = static_cast<int32_t*>(batch_dev_.data());
  auto put = [&](int64_t off, const std::vector<int32_t>& v, int64_t n, auto pad) {
    int32_t* dst = host + off;
    std::copy(v.begin(), v.end(), dst);
    for (int64_t i = static_cast<int64_t>(v.size()); i < n; ++i) dst[i] = pad(i);
  };
  auto zero = [](int64_t) { return 0; };
  auto self = [](int64_t i) { return static_cast<int32_t>(i); };
  put(lay.token_ids, b.token_ids, Tp, zero);
  put(lay.positions, b.positions, Tp, zero);
  put(lay.seq_of_token, b.seq_of_token, Tp, self);
  put(lay.q_index, b.q_index, Tp, zero);
  put(lay.slots, b.slots, Tp, [](int64_t) { return -1; });
  put(lay.logit_rows, b.logit_rows, R, self);
  put(lay.cu_seqlens, b.cu_seqlens, Bp + 1, self);
  put(lay.context_lens, b.context_lens, Bp, zero);
  {
    int32_t* dst = host + lay.block_tables;
    std::fill(dst, dst + int64_t{Bp} * bt_stride_, 0);
    for (int s = 0; s < B; ++s)
      std::copy_n(b.block_tables.begin() + int64_t{s} * b.max_blocks, b.max_blocks,
                  dst + int64_t{s} * bt_stride_);
  }
  if (mask_words > 0) {
    std::memcpy(host + lay.tree_mask, b.tree_mask.data(), b.tree_mask.size());
    put(lay.tree_offsets, b.tree_offsets, Bp, zero);
  }
  NI_CUDA_CHECK(cudaMemcpyAsync(dev, host, static_cast<size_t>(lay.total) * sizeof(int32_t),
                                cudaMemcpyHostToDevice, stream_));
  NI_CUDA_CHECK(cudaEventRecord(upload_done_, stream_));

  DeviceBatch d;
  d.num_tokens = Tp;
  d.num_seqs = Bp;
  d.max_blocks = bt_stride_;
  for (int32_t c : b.context_lens) d.max_context = std::max(d.max_context, c);
  auto view = [dev](int64_t off, std::vector<int64_t> shape) {
    return Tensor(DType::I32, std::move(shape), dev + off, nullptr, Device::Cuda);
  };
  d.token_ids = view(lay.token_ids, {Tp});
  d.positions = view(lay.positions, {Tp});
  d.seq_of_token = view(lay.seq_of_token, {Tp});
  d.q_index = view(lay.q_index, {Tp});
  d.slots = view(lay.slots, {Tp});
  d.cu_seqlens = view(lay.cu_seqlens, {Bp + 1});
  d.context_lens = view(lay.context_lens, {Bp});
  d.block_tables = view(lay.block_tables, {Bp, bt_stride_});
  d.logit_rows = view(lay.logit_rows, {R});
  if (mask_words > 0) {
    d.tree_mask = view(lay.tree_mask, {mask_words});
    d.tree_offsets = view(lay.tree_offsets, {Bp});
  }
  meta.token_ids.resize(static_cast<size_t>(Tp), 0);
  meta_ = std::move(meta);
  return d;
}

void CudaBackend::upload_rope(const RopeTable& table) {
  Tensor host(DType::F32, {table.max_positions, table.head_dim},
              const_cast<float*>(table.cos_sin.data()), nullptr);
  rope_ = upload(host, DType::F32);
  rope_dim_ = table.head_dim;
  rope_positions_ = table.max_positions;
}

void CudaBackend::fill_i32(Tensor& t, int32_t value) {
  cuda::fill_i32(t.as<int32_t>(), t.numel(), value, stream_);
}

const int32_t* CudaBackend::upload_lists(const std::vector<int32_t>& a,
                                         const std::vector<int32_t>& b) {
  const size_t n = a.size() + b.size();
  NI_CUDA_CHECK(cudaEventSynchronize(lists_done_));  // the last copy out of the pinned buffer
  if (n > lists_cap_) {  // (the capacity is kept once both buffers have it)
    const size_t cap = std::max(n, 2 * lists_cap_);
    void* h = nullptr;
    NI_CUDA_CHECK(cudaMallocHost(&h, cap * sizeof(int32_t)));
    std::shared_ptr<void> host(h, [](void* q) { cudaFreeHost(q); });
    // (No allocation epoch: no graph reads it. Freeing the old one waits for the device.)
    lists_dev_ = device_tensor({static_cast<int64_t>(cap)}, DType::I32);
    lists_host_ = std::move(host);
    lists_cap_ = cap;
  }
  auto* host = static_cast<int32_t*>(lists_host_.get());
  std::copy(a.begin(), a.end(), host);
  std::copy(b.begin(), b.end(), host + a.size());
  NI_CUDA_CHECK(cudaMemcpyAsync(lists_dev_.data(), host, n * sizeof(int32_t),
                                cudaMemcpyHostToDevice, stream_));
  NI_CUDA_CHECK(cudaEventRecord(lists_done_, stream_));
  return lists_dev_.as<const int32_t>();
}

void CudaBackend::write_i32(Tensor& t, const std::vector<int32_t>& idx,
                            const std::vector<int32_t>& v) {
  NI_ASSERT(idx.size() == v.size());
  if (idx.empty()) return;
  const int32_t* lists = upload_lists(idx, v);
  scatter_i32(t.as<int32_t>(), lists, lists + idx.size(), static_cast<int>(idx.size()), stream_);
}

void CudaBackend::copy_slots(std::span<KvLayer> layers, const std::vector<int32_t>& src,
                             const std::vector<int32_t>& dst) {
  NI_ASSERT(src.size() == dst.size());
  if (src.empty()) return;
  const int32_t* lists = upload_lists(src, dst);  // once for all layers
  for (KvLayer& layer : layers) {
    const int64_t row = static_cast<int64_t>(layer.k.nbytes()) / layer.k.dim(0);
    cuda::copy_slots(layer.k.data(), layer.v.data(), row, layer.slot_pos.as<int32_t>(), lists,
                     lists + src.size(), static_cast<int>(src.size()), stream_);
  }
}

void CudaBackend::drop_graphs() {
  for (auto& [key, exec] : graphs_) cudaGraphExecDestroy(exec);
  graphs_.clear();
  warmed_.clear();
}

void CudaBackend::run_step(int64_t key, const std::function<void()>& body) {
  if (key < 0 || profiling_) {
    body();
    return;
  }
  if (graph_epoch_ != alloc_epoch_) {
    drop_graphs();
    graph_epoch_ = alloc_epoch_;
  }
  const GraphKey gk{key, bt_stride_};
  auto it = graphs_.find(gk);
  if (it == graphs_.end()) {
    if (warmed_.insert(gk).second) {
      try {
        body();  // first sight: eager, so every lazily sized buffer reaches its size
      } catch (...) {
        warmed_.erase(gk);  // (those buffers may not have: the next sight runs eagerly again)
        throw;
      }
      return;
    }
    cudaGraph_t graph = nullptr;
    NI_CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
    capturing_ = true;
    try {
      body();
    } catch (...) {
      capturing_ = false;
      cudaStreamEndCapture(stream_, &graph);
      if (graph != nullptr) cudaGraphDestroy(graph);
      throw;
    }
    capturing_ = false;
    NI_CUDA_CHECK(cudaStreamEndCapture(stream_, &graph));
    cudaGraphExec_t exec = nullptr;
    const cudaError_t e = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    NI_CUDA_CHECK(e);
    ++captures_;
    it = graphs_.emplace(gk, exec).first;
  }
  NI_CUDA_CHECK(cudaGraphLaunch(it->second, stream_));
}

void CudaBackend::random_normal(Tensor& t, float std, uint64_t seed) {
  cuda::random_normal(t.dtype(), t.data(), t.numel(), std, seed, stream_);
}

void CudaBackend::set_profiling(bool on) {
  if (!on && profiling_) collect_profile();
  profiling_ = on;
}

void CudaBackend::collect_profile() {
  if (pending_.empty()) return;
  NI_CUDA_CHECK(cudaEventSynchronize(pending_.back().stop));
  for (const PendingOp& p : pending_) {
    float ms = 0;
    NI_CUDA_CHECK(cudaEventElapsedTime(&ms, p.start, p.stop));
    profile_.add(p.name, p.decode, ms);
    free_events_.push_back(p.start);
    free_events_.push_back(p.stop);
  }
  pending_.clear();
}

std::string CudaBackend::profile_report() {
  NI_CUDA_CHECK(cudaStreamSynchronize(stream_));
  collect_profile();
  return profile_.report("GPU time");
}

void CudaBackend::embedding(const Tensor& table, const DeviceBatch& b, Tensor& out) {
  NI_ASSERT(static_cast<int>(meta_.token_ids.size()) == b.num_tokens);
  // Negative ids are tokens of another rank's vocabulary shard: the kernel writes zeros.
  for (int32_t id : meta_.token_ids)
    if (id >= table.dim(0))
      fail("token id " + std::to_string(id) + " is outside the vocabulary (size " +
           std::to_string(table.dim(0)) + ")");
  OpScope op(*this, "embedding");
  if (dtype_block(table.dtype()) > 1) {
    dequant_rows(table.dtype(), table.data(), table.dim(0), table.dim(1),
                 b.token_ids.as<const int32_t>(), b.num_tokens, out.dtype(), out.data(), stream_);
    return;
  }
  cuda::embedding(table.dtype(), table.data(), table.dim(0), table.dim(1),
                  b.token_ids.as<const int32_t>(), b.num_tokens, out.data(), stream_);
}

void CudaBackend::rmsnorm(const Tensor& x, const Tensor& w, float eps, Tensor& out) {
  OpScope op(*this, "rmsnorm");
  cuda::rmsnorm(x.dtype(), x.data(), w.data(), eps, out.data(), static_cast<int>(x.dim(0)),
                static_cast<int>(x.dim(1)), stream_);
}

void CudaBackend::add_rmsnorm(Tensor& residual, const Tensor& x, const Tensor& w, float eps,
                              Tensor& out) {
  OpScope op(*this, "add_rmsnorm");
  cuda::add_rmsnorm(x.dtype(), residual.data(), x.data(), w.data(), eps, out.data(),
                    static_cast<int>(x.dim(0)), static_cast<int>(x.dim(1)), stream_);
}

void CudaBackend::add(Tensor& acc, const Tensor& x) {
  OpScope op(*this, "add");
  cuda::add(acc.dtype(), acc.data(), x.data(), acc.numel(), stream_);
}

void CudaBackend::matmul(const Tensor& x, const Tensor& w, Tensor& out) {
  NI_ASSERT(x.dim(1) == w.dim(1) && out.dim(1) == w.dim(0) && out.dim(0) == x.dim(0));
  const int64_t T = x.dim(0), K = x.dim(1), N = w.dim(0);
  if (dtype_block(w.dtype()) > 1) {
    NI_ASSERT(x.dtype() == DType::BF16);
    OpScope op(*this, "matmul " + std::to_string(N) + "x" + std::to_string(K) + " " +
                          dtype_name(w.dtype()));
    if (use_gemv_ && T <= kQuantGemvMaxTokens) {
      gemv_quant(w.dtype(), x.data(), w.data(), out.dtype(), out.data(), static_cast<int>(T),
                 static_cast<int>(K), static_cast<int>(N), stream_);
      return;
    }
    if (use_gemv_ && T <= kQuantMmaMaxTokens) {
      mma_quant(w.dtype(), x.data(), w.data(), out.dtype(), out.data(), static_cast<int>(T),
                static_cast<int>(K), static_cast<int>(N), stream_);
      return;
    }
    // Widened once per product into a scratch matrix (sized by a step's eager run, never inside a
    // captured one), then cuBLASLt's bf16 GEMM.
    if (widened_.empty() || widened_.numel() < N * K) widened_ = alloc({N * K}, DType::BF16);
    dequant_rows(w.dtype(), w.data(), N, K, nullptr, N, DType::BF16, widened_.data(), stream_);
    gemm_->run(DType::BF16, out.dtype(), x.data(), widened_.data(), out.data(), T, K, N, stream_);
    if (out.dtype() == DType::F32) round_to_bf16(out.as<float>(), out.numel(), stream_);
    return;
  }
  NI_ASSERT(x.dtype() == w.dtype());
  OpScope op(*this, "matmul " + std::to_string(N) + "x" + std::to_string(K));
  if (use_gemv_ && x.dtype() == DType::BF16 && T <= kGemvMaxTokens && K % 8 == 0) {
    gemv_bf16(x.data(), w.data(), out.dtype(), out.data(), static_cast<int>(T), static_cast<int>(K),
              static_cast<int>(N), stream_);
    return;  // (f32 logits already rounded to bf16 values as the GEMV stores them)
  }
  gemm_->run(x.dtype(), out.dtype(), x.data(), w.data(), out.data(), T, K, N, stream_);
  if (x.dtype() == DType::BF16 && out.dtype() == DType::F32)  // the logits of a bf16 model
    round_to_bf16(out.as<float>(), out.numel(), stream_);
}

void CudaBackend::silu_mul(const Tensor& gate_up, Tensor& out) {
  OpScope op(*this, "silu_mul");
  cuda::silu_mul(gate_up.dtype(), gate_up.data(), out.data(), static_cast<int>(out.dim(0)),
                 static_cast<int>(out.dim(1)), stream_);
}

void CudaBackend::gather_rows(const Tensor& x, const Tensor& rows, Tensor& out) {
  OpScope op(*this, "gather_rows");
  cuda::gather_rows(x.dtype(), x.data(), rows.as<const int32_t>(), static_cast<int>(rows.numel()),
                    x.dim(1), out.data(), stream_);
}

void CudaBackend::copy_columns(const Tensor& src, Tensor& dst, int64_t col0) {
  NI_ASSERT(src.dtype() == dst.dtype() && src.dim(0) == dst.dim(0) &&
            col0 + src.dim(1) <= dst.dim(1));
  OpScope op(*this, "copy_columns");
  const size_t elem = dtype_size(src.dtype());
  NI_CUDA_CHECK(cudaMemcpy2DAsync(
      static_cast<uint8_t*>(dst.data()) + col0 * elem, dst.dim(1) * elem, src.data(),
      src.dim(1) * elem, src.dim(1) * elem, src.dim(0), cudaMemcpyDeviceToDevice, stream_));
}

void CudaBackend::rope_store_kv(Tensor& qkv, int heads, int kv_heads, const DeviceBatch& b,
                                KvLayer& layer, bool rotate_k) {
  NI_ASSERT(rope_dim_ > 0 && qkv.dim(1) == int64_t{heads + 2 * kv_heads} * rope_dim_);
  OpScope op(*this, "rope_store_kv");
  RopeKvArgs a{qkv.dtype(),
               qkv.data(),
               b.num_tokens,
               heads,
               kv_heads,
               rope_dim_,
               b.positions.as<const int32_t>(),
               b.slots.as<const int32_t>(),
               rope_.as<const float>(),
               layer.k.data(),
               layer.v.data(),
               layer.slot_pos.as<int32_t>(),
               rotate_k};
  cuda::rope_store_kv(a, stream_);
}

int CudaBackend::decode_splits(int seqs, int kv_heads, int block_size) const {
  // Enough blocks for about four per multiprocessor, each split at least 32 keys of the
  // longest context the block tables can address (fixed per graph key).
  const int capacity = bt_stride_ * block_size;
  const int by_keys = std::max(1, capacity / 32);
  const int by_work = std::max(1, (4 * sm_count_ + seqs * kv_heads - 1) / (seqs * kv_heads));
  return std::clamp(std::min(by_keys, by_work), 1, 128);
}

void CudaBackend::attention(const Tensor& qkv, int heads, int kv_heads, const DeviceBatch& b,
                            const KvLayer& layer, bool rotate_keys, Tensor& out) {
  NI_ASSERT(static_cast<int>(meta_.token_ids.size()) == b.num_tokens);
  AttnArgs a{};
  a.dt = qkv.dtype();
  a.qkv = qkv.data();
  a.out = out.data();
  a.k_cache = layer.k.data();
  a.v_cache = layer.v.data();
  a.cache_slots = layer.slot_pos.numel();
  a.slot_pos = layer.slot_pos.as<const int32_t>();
  a.cos_sin = rope_.as<const float>();
  a.rope_rows = rope_positions_;
  a.heads = heads;
  a.kv_heads = kv_heads;
  a.head_dim = rope_dim_;
  a.block_size = layer.block_size;
  a.rotate_keys = rotate_keys;
  a.seq_of_token = b.seq_of_token.as<const int32_t>();
  a.q_index = b.q_index.as<const int32_t>();
  a.cu_seqlens = b.cu_seqlens.as<const int32_t>();
  a.context_lens = b.context_lens.as<const int32_t>();
  a.block_tables = b.block_tables.as<const int32_t>();
  a.bt_stride = b.max_blocks;
  a.tree_mask = static_cast<const uint8_t*>(b.tree_mask.data());
  a.tree_offsets = b.tree_offsets.empty() ? nullptr : b.tree_offsets.as<const int32_t>();
  a.tokens = b.num_tokens;
  a.seqs = b.num_seqs;
  if (!meta_.decode) {
    OpScope op(*this, "attention_prefill");
    if (!attention_prefill_mma(a, meta_.max_new, stream_))
      attention_prefill(a, meta_.max_new, stream_);
    return;
  }
  const int splits = decode_splits(b.num_seqs, kv_heads, layer.block_size);
  // Sized for the batch capacity rather than this batch, so that a larger bucket within it
  // allocates nothing (an allocation drops every graph): seqs x splits is at most
  // ceil(4 SMs / kv heads) + seqs (decode_splits). Lazily sized: an empty Tensor's numel() is 1,
  // so empty() is checked too.
  NI_ASSERT(b.num_seqs <= cap_seqs_);
  const int64_t need = decode_workspace_floats(
      cap_seqs_ + (4 * sm_count_ + kv_heads - 1) / kv_heads, heads, 1, rope_dim_);
  NI_ASSERT(need >= decode_workspace_floats(b.num_seqs, heads, splits, rope_dim_));
  if (attn_ws_.empty() || attn_ws_.numel() < need) attn_ws_ = alloc({need}, DType::F32);
  if (attn_count_.empty() || attn_count_.numel() < int64_t{cap_seqs_} * kv_heads) {
    attn_count_ = alloc({int64_t{cap_seqs_} * kv_heads}, DType::I32);
    fill_i32(attn_count_, 0);
  }
  OpScope op(*this, "attention_decode");
  if (!attention_decode_mma(a, splits, attn_ws_.as<float>(), attn_count_.as<int32_t>(), stream_))
    attention_decode(a, splits, attn_ws_.as<float>(), stream_);
}

void CudaBackend::argmax_rows(const Tensor& logits, Tensor& ids) {
  NI_ASSERT(logits.dtype() == DType::F32 && ids.numel() >= logits.dim(0));
  OpScope op(*this, "argmax");
  cuda::argmax_rows(logits.as<const float>(), static_cast<int>(logits.dim(0)),
                    static_cast<int>(logits.dim(1)), ids.as<int32_t>(), stream_);
}

void CudaBackend::edit_logits(const Tensor& logits, std::span<const LogitEdit> edits) {
  if (edits.empty()) return;
  NI_ASSERT(logits.dtype() == DType::F32);
  for (const LogitEdit& e : edits)
    NI_ASSERT(e.row >= 0 && e.row < logits.dim(0) && e.token >= 0 && e.token < logits.dim(1));
  const auto bytes = static_cast<int64_t>(edits.size() * sizeof(LogitEdit));
  if (pick_edits_.empty() || pick_edits_.numel() * 4 < bytes)
    pick_edits_ = device_tensor({(bytes + 3) / 4}, DType::I32);
  NI_CUDA_CHECK(cudaMemcpyAsync(pick_edits_.data(), edits.data(), static_cast<size_t>(bytes),
                                cudaMemcpyHostToDevice, stream_));
  OpScope op(*this, "logit_edits");
  cuda::edit_logits(logits.as<float>(), static_cast<int>(logits.dim(1)),
                    static_cast<const LogitEdit*>(pick_edits_.data()),
                    static_cast<int>(edits.size()), stream_);
}

void CudaBackend::sample_rows(const Tensor& logits, std::span<const RowPick> params, Tensor& ids) {
  NI_ASSERT(logits.dtype() == DType::F32 && static_cast<int64_t>(params.size()) == logits.dim(0) &&
            ids.numel() >= logits.dim(0));
  const auto bytes = static_cast<int64_t>(params.size() * sizeof(RowPick));
  if (pick_params_.empty() || pick_params_.numel() * 4 < bytes)
    pick_params_ = device_tensor({(bytes + 3) / 4}, DType::I32);
  // From pageable memory: the call returns once the source has been read (staged or copied).
  NI_CUDA_CHECK(cudaMemcpyAsync(pick_params_.data(), params.data(), static_cast<size_t>(bytes),
                                cudaMemcpyHostToDevice, stream_));
  if (pick_scratch_.empty() || pick_scratch_.numel() < 2 * logits.numel())
    pick_scratch_ = device_tensor({2 * logits.numel()}, DType::F32);
  const int rows = static_cast<int>(logits.dim(0));
  const int blocks = cuda::row_blocks(rows);  // one-time driver queries stay out of the profile
  OpScope op(*this, "sample");
  cuda::sample_rows(logits.as<const float>(), rows, static_cast<int>(logits.dim(1)),
                    static_cast<const RowPick*>(pick_params_.data()), pick_scratch_.as<float>(),
                    ids.as<int32_t>(), blocks, stream_);
}

}  // namespace nanoinfer::cuda

namespace nanoinfer {

std::unique_ptr<Backend> make_cuda_backend(DType compute_dtype, int device, bool keep_blocks) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    (void)cudaGetLastError();
    return nullptr;
  }
  if (device < 0 || device >= count)
    fail("GPU " + std::to_string(device) + " does not exist (" + std::to_string(count) +
         " visible): start at most one rank per GPU");
  NI_CUDA_CHECK(cudaSetDevice(device));
  return std::make_unique<cuda::CudaBackend>(compute_dtype, keep_blocks);
}

}  // namespace nanoinfer
