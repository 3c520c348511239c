// UTF-8 decoding, character classes and lossy repair (see unicode.h).
#include "tokenizer/unicode.h"

#include <algorithm>
#include <array>

namespace nanoinfer {
namespace {

constexpr std::array<CharClass, 128> make_ascii_classes() {
  std::array<CharClass, 128> t{};
  for (int c = 0; c < 128; ++c) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
      t[c] = CharClass::kLetter;
    } else if (c >= '0' && c <= '9') {
      t[c] = CharClass::kNumber;
    } else if (c == ' ' || (c >= 0x09 && c <= 0x0D)) {
      t[c] = CharClass::kSpace;
    }
  }
  return t;
}
constexpr std::array<CharClass, 128> kAsciiClasses = make_ascii_classes();

// The range a well-formed sequence's second byte must fall in, by lead byte (Unicode table 3-7);
// the remaining continuation bytes are always 0x80..0xBF.
struct LeadInfo {
  uint32_t len;
  uint8_t lo;
  uint8_t hi;
};
LeadInfo lead_info(uint8_t b) {
  if (b >= 0xC2 && b <= 0xDF) return {2, 0x80, 0xBF};
  if (b == 0xE0) return {3, 0xA0, 0xBF};
  if (b == 0xED) return {3, 0x80, 0x9F};
  if (b >= 0xE1 && b <= 0xEF) return {3, 0x80, 0xBF};
  if (b == 0xF0) return {4, 0x90, 0xBF};
  if (b >= 0xF1 && b <= 0xF3) return {4, 0x80, 0xBF};
  if (b == 0xF4) return {4, 0x80, 0x8F};
  return {0, 0, 0};
}

// Length of the well-formed prefix of the sequence starting at pos: the full length when valid,
// otherwise how many bytes form a maximal subpart (>= 1), with `complete` telling which.
struct SeqCheck {
  uint32_t len;
  bool complete;
  bool truncated;  // ran into the end of input while still well-formed
};
SeqCheck check_sequence(std::string_view s, size_t pos) {
  const auto b = static_cast<uint8_t>(s[pos]);
  if (b < 0x80) return {1, true, false};
  const LeadInfo info = lead_info(b);
  if (info.len == 0) return {1, false, false};
  for (uint32_t k = 1; k < info.len; ++k) {
    if (pos + k >= s.size()) return {k, false, true};
    const auto c = static_cast<uint8_t>(s[pos + k]);
    const uint8_t lo = k == 1 ? info.lo : 0x80;
    const uint8_t hi = k == 1 ? info.hi : 0xBF;
    if (c < lo || c > hi) return {k, false, false};
  }
  return {info.len, true, false};
}

}  // namespace

CharClass char_class(uint32_t cp) {
  if (cp < 128) return kAsciiClasses[cp];
  const auto ranges = code_point_ranges();
  auto it = std::upper_bound(ranges.begin(), ranges.end(), cp,
                             [](uint32_t v, const CodePointRange& r) { return v < r.lo; });
  if (it == ranges.begin()) return CharClass::kOther;
  --it;
  return cp <= it->hi ? it->cls : CharClass::kOther;
}

Utf8Step decode_utf8(std::string_view s, size_t pos) {
  const auto b = static_cast<uint8_t>(s[pos]);
  if (b < 0x80) return {b, 1, true};
  const SeqCheck check = check_sequence(s, pos);
  if (!check.complete) return {b, 1, false};
  uint32_t cp = b & (0xFF >> (check.len + 1));
  for (uint32_t k = 1; k < check.len; ++k)
    cp = (cp << 6) | (static_cast<uint8_t>(s[pos + k]) & 0x3F);
  return {cp, check.len, true};
}

void append_utf8(uint32_t cp, std::string& out) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

bool is_python_space(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 || cp == 0xA0 ||
         cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 ||
         cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

std::string python_strip(std::string_view s) {
  size_t begin = 0;
  while (begin < s.size()) {
    const Utf8Step step = decode_utf8(s, begin);
    if (!step.valid || !is_python_space(step.cp)) break;
    begin += step.len;
  }
  return python_rstrip(s.substr(begin));
}

std::string python_rstrip(std::string_view s) {
  size_t end = 0;
  for (size_t pos = 0; pos < s.size();) {
    const Utf8Step step = decode_utf8(s, pos);
    pos += step.len;
    if (!step.valid || !is_python_space(step.cp)) end = pos;
  }
  return std::string(s.substr(0, end));
}

size_t append_utf8_lossy(std::string_view bytes, bool final, std::string& out) {
  size_t pos = 0;
  while (pos < bytes.size()) {
    const SeqCheck check = check_sequence(bytes, pos);
    if (check.complete) {
      out.append(bytes.substr(pos, check.len));
    } else {
      if (check.truncated && !final) return pos;
      out.append(kReplacementChar);
    }
    pos += check.len;
  }
  return pos;
}

bool is_valid_utf8(std::string_view bytes) {
  for (size_t pos = 0; pos < bytes.size();) {
    const SeqCheck check = check_sequence(bytes, pos);
    if (!check.complete) return false;
    pos += check.len;
  }
  return true;
}

}  // namespace nanoinfer
