// What rank 0 tells the other ranks of a tensor-parallel group, as bytes for the control
// plane: a new cache for a generate() call, each step's batch with the cache ops made before it,
// the end of the call, or the error that ended it early.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "kv/kv_cache.h"
#include "model/batch.h"

namespace nanoinfer {

struct StepMessage {
  enum class Kind : uint8_t { Begin, Step, End, Abort };
  Kind kind = Kind::End;
  KvCacheOptions cache;      // Begin
  std::vector<CacheOp> ops;  // Step: run on the cache before the forward
  Batch batch;               // Step
  std::string error;         // Abort

  static StepMessage begin(const KvCacheOptions& cache) {
    StepMessage m;
    m.kind = Kind::Begin;
    m.cache = cache;
    return m;
  }
  static StepMessage step(std::vector<CacheOp> ops, const Batch& batch) {
    StepMessage m;
    m.kind = Kind::Step;
    m.ops = std::move(ops);
    m.batch = batch;
    return m;
  }
  static StepMessage end() { return {}; }
  static StepMessage abort(const std::string& error) {
    StepMessage m;
    m.kind = Kind::Abort;
    m.error = error;
    return m;
  }
};

std::vector<uint8_t> encode(const StepMessage& m);
// Throws Error on bytes that are not a whole message.
StepMessage decode(const std::vector<uint8_t>& bytes);

}  // namespace nanoinfer
