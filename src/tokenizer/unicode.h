// UTF-8 decoding and the few Unicode properties the tokenizer needs: the character classes of the
// pre-tokenizer regexes (\p{L}, \p{N}, \s), Python's notion of whitespace (Jinja's `trim`), and
// lossy UTF-8 repair that replaces invalid bytes exactly like Rust's String::from_utf8_lossy.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace nanoinfer {

enum class CharClass : uint8_t { kOther, kLetter, kNumber, kSpace };

struct CodePointRange {
  uint32_t lo;
  uint32_t hi;
  CharClass cls;
};

// Sorted, non-overlapping ranges of every code point whose class is not kOther (generated).
std::span<const CodePointRange> code_point_ranges();

CharClass char_class(uint32_t cp);

// One step of UTF-8 decoding. An invalid or truncated sequence yields one byte with valid=false,
// so every byte of the input belongs to exactly one step.
struct Utf8Step {
  uint32_t cp;
  uint32_t len;
  bool valid;
};
Utf8Step decode_utf8(std::string_view s, size_t pos);

void append_utf8(uint32_t cp, std::string& out);

// Python's str.isspace(): what Jinja's `trim` filter strips.
bool is_python_space(uint32_t cp);
std::string python_strip(std::string_view s);
std::string python_rstrip(std::string_view s);

// Appends `bytes` to `out` as valid UTF-8, each maximal invalid subpart replaced by U+FFFD. When
// `final` is false a trailing sequence that may still be completed is left unconsumed. Returns the
// number of bytes consumed.
size_t append_utf8_lossy(std::string_view bytes, bool final, std::string& out);

bool is_valid_utf8(std::string_view bytes);

inline constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";

}  // namespace nanoinfer
