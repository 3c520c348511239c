// GPT-2 byte-level alphabet (see byte_level.h).
#include "tokenizer/byte_level.h"

#include <array>

#include "tokenizer/unicode.h"

namespace nanoinfer {
namespace {

constexpr bool is_printable_byte(int b) {
  return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

constexpr std::array<uint32_t, 256> make_byte_to_cp() {
  std::array<uint32_t, 256> t{};
  uint32_t next = 256;
  for (int b = 0; b < 256; ++b) t[b] = is_printable_byte(b) ? b : next++;
  return t;
}
constexpr std::array<uint32_t, 256> kByteToCp = make_byte_to_cp();

// The alphabet only uses code points below 324 (256 + the 68 non-printable bytes).
constexpr uint32_t kAlphabetEnd = 324;
constexpr std::array<int16_t, kAlphabetEnd> make_cp_to_byte() {
  std::array<int16_t, kAlphabetEnd> t{};
  for (auto& v : t) v = -1;
  for (int b = 0; b < 256; ++b) t[kByteToCp[b]] = static_cast<int16_t>(b);
  return t;
}
constexpr std::array<int16_t, kAlphabetEnd> kCpToByte = make_cp_to_byte();

}  // namespace

uint32_t byte_to_code_point(uint8_t b) {
  return kByteToCp[b];
}

std::optional<std::string> byte_level_unmap(std::string_view piece) {
  std::string out;
  out.reserve(piece.size());
  for (size_t pos = 0; pos < piece.size();) {
    const Utf8Step step = decode_utf8(piece, pos);
    if (!step.valid || step.cp >= kAlphabetEnd || kCpToByte[step.cp] < 0) return std::nullopt;
    out += static_cast<char>(kCpToByte[step.cp]);
    pos += step.len;
  }
  return out;
}

}  // namespace nanoinfer
