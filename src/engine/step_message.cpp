#include "engine/step_message.h"

#include <cstring>
#include <type_traits>

#include "util/error.h"

namespace nanoinfer {
namespace {

class Writer {
 public:
  template <class T>
  void pod(const T& v) {
    static_assert(std::is_trivially_copyable_v<T>);
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    out_.insert(out_.end(), p, p + sizeof(T));
  }
  template <class T>
  void vec(const std::vector<T>& v) {
    pod(static_cast<uint64_t>(v.size()));
    const auto* p = reinterpret_cast<const uint8_t*>(v.data());
    out_.insert(out_.end(), p, p + v.size() * sizeof(T));
  }
  void str(const std::string& s) { vec(std::vector<char>(s.begin(), s.end())); }
  std::vector<uint8_t> take() { return std::move(out_); }

 private:
  std::vector<uint8_t> out_;
};

class Reader {
 public:
  explicit Reader(const std::vector<uint8_t>& in) : in_(in) {}
  template <class T>
  T pod() {
    T v;
    take(&v, sizeof(T));
    return v;
  }
  template <class T>
  std::vector<T> vec() {
    const auto n = pod<uint64_t>();
    if (n > (in_.size() - pos_) / sizeof(T)) fail("step message: truncated");
    std::vector<T> v(n);
    take(v.data(), n * sizeof(T));
    return v;
  }
  std::string str() {
    const std::vector<char> c = vec<char>();
    return {c.begin(), c.end()};
  }
  bool done() const { return pos_ == in_.size(); }

 private:
  void take(void* dst, size_t n) {
    if (n > in_.size() - pos_) fail("step message: truncated");
    if (n > 0) std::memcpy(dst, in_.data() + pos_, n);
    pos_ += n;
  }
  const std::vector<uint8_t>& in_;
  size_t pos_ = 0;
};

}  // namespace

std::vector<uint8_t> encode(const StepMessage& m) {
  Writer w;
  w.pod(m.kind);
  switch (m.kind) {
    case StepMessage::Kind::Begin:
      w.pod(m.cache.block_size);
      w.pod(m.cache.num_blocks);
      w.str(m.cache.rope);
      w.pod(m.cache.sink_tokens);
      w.pod(m.cache.window);
      break;
    case StepMessage::Kind::Step: {
      w.pod(static_cast<uint64_t>(m.ops.size()));
      for (const CacheOp& op : m.ops) {
        w.pod(op.kind);
        w.vec(op.slots);
        w.vec(op.values);
      }
      const Batch& b = m.batch;
      for (const std::vector<int32_t>* v :
           {&b.token_ids, &b.positions, &b.seq_of_token, &b.q_index, &b.slots, &b.cu_seqlens,
            &b.context_lens, &b.block_tables, &b.logit_rows, &b.tree_offsets})
        w.vec(*v);
      w.pod(b.max_blocks);
      w.vec(b.tree_mask);
      break;
    }
    case StepMessage::Kind::End:
      break;
    case StepMessage::Kind::Abort:
      w.str(m.error);
      break;
  }
  return w.take();
}

StepMessage decode(const std::vector<uint8_t>& bytes) {
  Reader r(bytes);
  StepMessage m;
  m.kind = r.pod<StepMessage::Kind>();
  switch (m.kind) {
    case StepMessage::Kind::Begin:
      m.cache.block_size = r.pod<int>();
      m.cache.num_blocks = r.pod<int>();
      m.cache.rope = r.str();
      m.cache.sink_tokens = r.pod<int>();
      m.cache.window = r.pod<int>();
      break;
    case StepMessage::Kind::Step: {
      const auto n_ops = r.pod<uint64_t>();
      if (n_ops > bytes.size()) fail("step message: truncated");
      m.ops.resize(n_ops);
      for (CacheOp& op : m.ops) {
        op.kind = r.pod<CacheOp::Kind>();
        op.slots = r.vec<int32_t>();
        op.values = r.vec<int32_t>();
      }
      Batch& b = m.batch;
      for (std::vector<int32_t>* v :
           {&b.token_ids, &b.positions, &b.seq_of_token, &b.q_index, &b.slots, &b.cu_seqlens,
            &b.context_lens, &b.block_tables, &b.logit_rows, &b.tree_offsets})
        *v = r.vec<int32_t>();
      b.max_blocks = r.pod<int32_t>();
      b.tree_mask = r.vec<uint8_t>();
      break;
    }
    case StepMessage::Kind::End:
      break;
    case StepMessage::Kind::Abort:
      m.error = r.str();
      break;
    default:
      fail("step message: unknown kind " + std::to_string(static_cast<int>(m.kind)));
  }
  if (!r.done()) fail("step message: trailing bytes");
  return m;
}

}  // namespace nanoinfer
