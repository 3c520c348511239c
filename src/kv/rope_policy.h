// When keys are rotated is the cache's decision, not attention's:
//   PostRope: rotate k by its position before it is stored; attention reads keys as stored.
//   PreRope:  store raw k; attention rotates each key by the position the cache assigned it
//             (slot_pos), so the cache may renumber positions later (sink cache).
// The model calls store() and attend(); it never asks which policy it holds.
#pragma once

#include <memory>
#include <string>

#include "backend/backend.h"

namespace nanoinfer {

class RopePolicy {
 public:
  virtual ~RopePolicy() = default;
  virtual std::string name() const = 0;
  virtual void store(Backend& be, Tensor& qkv, int heads, int kv_heads, const DeviceBatch& b,
                     KvLayer& layer) const = 0;
  virtual void attend(Backend& be, const Tensor& qkv, int heads, int kv_heads, const DeviceBatch& b,
                      const KvLayer& layer, Tensor& out) const = 0;
};

class PostRope final : public RopePolicy {
 public:
  std::string name() const override { return "post-rope"; }
  void store(Backend& be, Tensor& qkv, int heads, int kv_heads, const DeviceBatch& b,
             KvLayer& layer) const override {
    be.rope_store_kv(qkv, heads, kv_heads, b, layer, /*rotate_k=*/true);
  }
  void attend(Backend& be, const Tensor& qkv, int heads, int kv_heads, const DeviceBatch& b,
              const KvLayer& layer, Tensor& out) const override {
    be.attention(qkv, heads, kv_heads, b, layer, /*rotate_keys=*/false, out);
  }
};

class PreRope final : public RopePolicy {
 public:
  std::string name() const override { return "pre-rope"; }
  void store(Backend& be, Tensor& qkv, int heads, int kv_heads, const DeviceBatch& b,
             KvLayer& layer) const override {
    be.rope_store_kv(qkv, heads, kv_heads, b, layer, /*rotate_k=*/false);
  }
  void attend(Backend& be, const Tensor& qkv, int heads, int kv_heads, const DeviceBatch& b,
              const KvLayer& layer, Tensor& out) const override {
    be.attention(qkv, heads, kv_heads, b, layer, /*rotate_keys=*/true, out);
  }
};

// "post" or "pre"; throws Error otherwise.
std::unique_ptr<RopePolicy> make_rope_policy(const std::string& name);

}  // namespace nanoinfer
