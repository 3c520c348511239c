// Which entries a sequence keeps and which RoPE position each gets — the cache's other decision
// besides the RopePolicy. FullCache keeps everything at the positions given; SinkCache
// (StreamingLLM) keeps the first n_sink entries plus a window of the most recent ones and numbers
// the kept entries 0, 1, 2, ... in cache order, so positions stay coherent after eviction
// (which only works when keys are rotated on read: PreRope).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace nanoinfer {

class CachePolicy {
 public:
  virtual ~CachePolicy() = default;
  virtual std::string name() const = 0;
  // Entries to drop (a run starting at logical index first()) before n_new entries join a
  // sequence that holds `length`.
  virtual int evict_count(int length, int n_new) const = 0;
  virtual int evict_first() const = 0;
  // The RoPE position of the entry at logical index j whose position in the text is `natural`.
  virtual int32_t position(int j, int32_t natural) const = 0;
  // True when positions are renumbered after an eviction (kept keys change position).
  virtual bool renumbers() const = 0;
  // Largest number of entries a sequence ever holds (0 = unbounded).
  virtual int capacity() const = 0;
};

class FullCache final : public CachePolicy {
 public:
  std::string name() const override { return "full"; }
  int evict_count(int /*length*/, int /*n_new*/) const override { return 0; }
  int evict_first() const override { return 0; }
  int32_t position(int /*j*/, int32_t natural) const override { return natural; }
  bool renumbers() const override { return false; }
  int capacity() const override { return 0; }
};

class SinkCache final : public CachePolicy {
 public:
  SinkCache(int n_sink, int window) : n_sink_(n_sink), window_(window) {}
  std::string name() const override {
    return "sink(" + std::to_string(n_sink_) + "+" + std::to_string(window_) + ")";
  }
  int evict_count(int length, int n_new) const override {
    const int over = length + n_new - (n_sink_ + window_);
    return over > 0 ? over : 0;
  }
  int evict_first() const override { return n_sink_; }
  int32_t position(int j, int32_t /*natural*/) const override { return j; }
  bool renumbers() const override { return true; }
  int capacity() const override { return n_sink_ + window_; }

 private:
  int n_sink_;
  int window_;
};

}  // namespace nanoinfer
