// The CPU backend's decode attention alone: one new token per sequence against a cache of
// `context` entries, every layer of a model's shape in turn (the cache of all layers is larger
// than the last-level cache, as in a real decode step). Prints microseconds per layer and the
// rate at which the K and V of the context are read, next to a plain read of the same bytes.
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "backend/backend.h"
#include "bench_args.h"
#include "engine/batch_builder.h"
#include "kv/kv_cache.h"

namespace {

using namespace nanoinfer;
using Clock = std::chrono::steady_clock;

struct Shape {
  const char* name;
  int layers, heads, kv_heads, head_dim;
};

// Microseconds of one layer's decode attention, median and best of `reps` passes through all
// layers (the best: a box with other work on its cores preempts some passes).
std::pair<double, double> decode_us(const Shape& sh, int context, int batch, int reps) {
  ModelConfig c;
  c.num_layers = sh.layers;
  c.num_heads = sh.heads;
  c.num_kv_heads = sh.kv_heads;
  c.head_dim = sh.head_dim;
  c.rope_theta = 10000.0F;
  auto be = make_cpu_backend();
  be->upload_rope(RopeTable::build(c, context + 1));
  const int block = 16, blocks = batch * ((context + block) / block + 1);
  KvCache cache(*be, c, {block, blocks, "post"});
  const int W = (sh.heads + 2 * sh.kv_heads) * sh.head_dim;
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0.0F, 1.0F);
  std::vector<SeqState> seqs;
  seqs.reserve(batch);
  for (int s = 0; s < batch; ++s)
    seqs.emplace_back(s, cache.create_sequence(), std::vector<int32_t>(context, 1));
  // One step: the pending tokens of every sequence (`chunk` at most each), K and V stored in
  // every layer; returns the step's batch with its q|k|v rows.
  auto step = [&](int chunk, bool attend, std::vector<double>* times) {
    std::vector<SeqState*> live;
    for (SeqState& s : seqs) {
      s.chunk = std::min<int>(chunk, static_cast<int>(s.pending.size()));
      live.push_back(&s);
    }
    const Batch b = build_batch(live, cache);
    Tensor qkv = be->alloc({b.num_tokens(), W}, DType::F32);
    for (int64_t i = 0; i < qkv.numel(); ++i) qkv.as<float>()[i] = nd(rng);
    const DeviceBatch db = be->upload_batch(b);
    Tensor out = be->alloc({b.num_tokens(), sh.heads * sh.head_dim}, DType::F32);
    for (int l = 0; l < sh.layers; ++l)
      cache.rope().store(*be, qkv, sh.heads, sh.kv_heads, db, cache.layer(l));
    for (int r = 0; attend && r < reps; ++r) {
      const auto t0 = Clock::now();
      for (int l = 0; l < sh.layers; ++l)
        cache.rope().attend(*be, qkv, sh.heads, sh.kv_heads, db, cache.layer(l), out);
      times->push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count() /
                       sh.layers);
    }
  };
  while (!seqs[0].pending.empty()) step(1024, false, nullptr);  // fill the cache
  for (SeqState& s : seqs) s.pending = {1};
  std::vector<double> times;
  step(1, true, &times);
  std::sort(times.begin(), times.end());
  return {times[times.size() / 2], times[0]};
}

// GB/s of a plain contiguous read of 256 MB (beyond the caches), by one thread.
double read_gbs() {
  std::vector<float> a(size_t{64} << 20, 1.0F);
  double best = 1e30;
  __m256 sum = _mm256_setzero_ps();
  for (int r = 0; r < 5; ++r) {
    const auto t0 = Clock::now();
    for (size_t i = 0; i < a.size(); i += 32)
      for (int k = 0; k < 4; ++k) sum = _mm256_add_ps(sum, _mm256_loadu_ps(&a[i + 8 * k]));
    best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count());
  }
  std::printf("%s", _mm256_cvtss_f32(sum) == 0 ? " " : "");
  return static_cast<double>(a.size()) * 4 / best / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 20;
  std::string only;  // --shape NAME: that shape alone
  const Shape shapes[] = {{"SmolLM2-135M", 30, 9, 3, 64},
                          {"SmolLM2-1layer", 1, 9, 3, 64},
                          {"Llama-3-8B", 32, 32, 8, 128}};
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--reps") == 0 && i + 1 < argc) {
      reps = nanoinfer::bench::whole_number("--reps", argv[++i], 1);
    } else if (std::strcmp(argv[i], "--shape") == 0 && i + 1 < argc) {
      only = argv[++i];
    } else {
      std::fprintf(stderr, "usage: bench_cpu_attention [--reps N] [--shape NAME]\n");
      return 2;
    }
  }
  if (!only.empty() && std::none_of(std::begin(shapes), std::end(shapes),
                                    [&](const Shape& sh) { return only == sh.name; })) {
    std::fprintf(stderr, "no shape %s; the shapes:", only.c_str());
    for (const Shape& sh : shapes) std::fprintf(stderr, " %s", sh.name);
    std::fprintf(stderr, "\n");
    return 2;
  }
  std::printf("%-14s %7s %5s %17s %16s\n", "shape", "context", "batch", "us/layer med/best",
              "K+V GB/s (best)");
  for (const Shape& sh : shapes)
    for (const int context : {1024, 4096})
      for (const int batch : {1, 4}) {
        if (!only.empty() && only != sh.name) continue;
        const double bytes = 2.0 * batch * context * sh.kv_heads * sh.head_dim * 4;
        if (bytes * sh.layers > 3e9) continue;  // (the dev box's memory)
        const auto [median, best] = decode_us(sh, context, batch, reps);
        std::printf("%-14s %7d %5d %9.1f %7.1f %16.1f\n", sh.name, context, batch, median, best,
                    bytes / best / 1e3);
        std::fflush(stdout);
      }
  std::printf("a plain contiguous read, one thread: %.1f GB/s\n", read_gbs());
  return 0;
}
