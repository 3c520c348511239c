// A flag set for the length of a scope and cleared on the way out, exceptions included: "this
// call is under way", which a re-entrant call (from a callback) checks.
#pragma once

namespace nanoinfer {

class ScopedFlag {
 public:
  explicit ScopedFlag(bool& flag) : flag_(flag) { flag_ = true; }
  ~ScopedFlag() { flag_ = false; }
  ScopedFlag(const ScopedFlag&) = delete;
  ScopedFlag& operator=(const ScopedFlag&) = delete;

 private:
  bool& flag_;
};

}  // namespace nanoinfer
