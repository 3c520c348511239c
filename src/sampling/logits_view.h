// A non-owning [rows, vocab] view of row-major float logits on the host: the unit every logits
// processor and selector works on, so one call covers the whole batch (and a device kernel can
// later take the same shape).
#pragma once

#include <cstddef>
#include <span>

#include "util/error.h"

namespace nanoinfer::sampling {

struct LogitsView {
  std::span<float> data;  // [rows, vocab]
  int rows = 0;
  int vocab = 0;

  LogitsView(std::span<float> d, int r, int v) : data(d), rows(r), vocab(v) {
    NI_ASSERT(r >= 0 && v > 0 && d.size() == static_cast<size_t>(r) * static_cast<size_t>(v));
  }
  std::span<float> row(int r) const {
    return data.subspan(static_cast<size_t>(r) * static_cast<size_t>(vocab),
                        static_cast<size_t>(vocab));
  }
};

}  // namespace nanoinfer::sampling
