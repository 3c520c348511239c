// Pre-tokenizer regexes written out as code (see pretokenizer.h). Each branch below is one
// alternative of the regex, tried in the regex's order; the first that matches wins.
#include "tokenizer/pretokenizer.h"

#include "tokenizer/unicode.h"

namespace nanoinfer {
namespace {

struct Char {
  uint32_t cp = 0;
  uint32_t len = 0;  // 0 at the end of the text
  CharClass cls = CharClass::kOther;
};

Char peek(std::string_view text, size_t pos) {
  if (pos >= text.size()) return {};
  const auto b = static_cast<uint8_t>(text[pos]);
  if (b < 0x80) return {b, 1, char_class(b)};
  const Utf8Step step = decode_utf8(text, pos);
  if (!step.valid) return {0xFFFFFFFF, 1, CharClass::kOther};
  return {step.cp, step.len, char_class(step.cp)};
}

bool is_newline(const Char& c) {
  return c.cp == '\r' || c.cp == '\n';
}
// [^\s\p{L}\p{N}]
bool is_symbol(const Char& c) {
  return c.len != 0 && c.cls == CharClass::kOther;
}

size_t run_end(std::string_view text, size_t pos, CharClass cls) {
  for (Char c = peek(text, pos); c.len != 0 && c.cls == cls; c = peek(text, pos)) pos += c.len;
  return pos;
}

size_t symbol_run_end(std::string_view text, size_t pos) {
  for (Char c = peek(text, pos); is_symbol(c); c = peek(text, pos)) pos += c.len;
  return pos;
}

// Lower-cases the letters that can follow the apostrophe of a contraction under Unicode case
// folding ((?i) in the Llama-3 regex): ASCII, plus U+017F LATIN SMALL LETTER LONG S, which folds
// to 's'.
uint32_t fold_contraction_letter(uint32_t cp) {
  if (cp >= 'A' && cp <= 'Z') return cp + ('a' - 'A');
  if (cp == 0x17F) return 's';
  return cp;
}

// '(s|t|m|d|re|ve|ll); returns the end or 0 when no contraction starts at pos.
size_t contraction_end(std::string_view text, size_t pos, bool ignore_case) {
  if (text[pos] != '\'') return 0;
  const Char c1 = peek(text, pos + 1);
  if (c1.len == 0) return 0;
  const uint32_t a = ignore_case ? fold_contraction_letter(c1.cp) : c1.cp;
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return pos + 1 + c1.len;
  const Char c2 = peek(text, pos + 1 + c1.len);
  if (c2.len == 0) return 0;
  const uint32_t b = ignore_case ? fold_contraction_letter(c2.cp) : c2.cp;
  if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) {
    return pos + 1 + c1.len + c2.len;
  }
  return 0;
}

// \s+(?!\S)|\s+ starting at pos, which holds a space character: the whole run when it reaches the
// end of the text or is one character long, otherwise the run minus its last character (which
// then starts the next pre-token together with the word after it).
size_t trailing_space_end(std::string_view text, size_t pos) {
  size_t end = pos;
  size_t last_start = pos;
  for (Char c = peek(text, end); c.len != 0 && c.cls == CharClass::kSpace; c = peek(text, end)) {
    last_start = end;
    end += c.len;
  }
  if (end == text.size() || last_start == pos) return end;
  return last_start;
}

}  // namespace

size_t llama3_pretoken_end(std::string_view text, size_t pos) {
  if (const size_t end = contraction_end(text, pos, true); end != 0) return end;

  const Char c0 = peek(text, pos);
  // [^\r\n\p{L}\p{N}]?\p{L}+
  if (c0.cls == CharClass::kLetter) return run_end(text, pos, CharClass::kLetter);
  if (c0.cls != CharClass::kNumber && !is_newline(c0) &&
      peek(text, pos + c0.len).cls == CharClass::kLetter) {
    return run_end(text, pos + c0.len, CharClass::kLetter);
  }
  // \p{N}{1,3}
  if (c0.cls == CharClass::kNumber) {
    size_t end = pos;
    for (int k = 0; k < 3; ++k) {
      const Char c = peek(text, end);
      if (c.len == 0 || c.cls != CharClass::kNumber) break;
      end += c.len;
    }
    return end;
  }
  // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
  const size_t sym_start = c0.cp == ' ' ? pos + 1 : pos;
  if (is_symbol(peek(text, sym_start))) {
    size_t end = symbol_run_end(text, sym_start);
    while (end < text.size() && (text[end] == '\r' || text[end] == '\n')) ++end;
    return end;
  }
  // Only spaces remain. \s*[\r\n]+ : the space run up to and including its last newline.
  size_t end = pos;
  size_t after_newline = 0;
  for (Char c = peek(text, end); c.len != 0 && c.cls == CharClass::kSpace; c = peek(text, end)) {
    end += c.len;
    if (is_newline(c)) after_newline = end;
  }
  if (after_newline != 0) return after_newline;
  return trailing_space_end(text, pos);
}

size_t gpt2_pretoken_end(std::string_view text, size_t pos) {
  if (const size_t end = contraction_end(text, pos, false); end != 0) return end;

  const size_t start = text[pos] == ' ' ? pos + 1 : pos;
  const Char c = peek(text, start);
  if (c.len != 0) {
    if (c.cls == CharClass::kLetter) return run_end(text, start, CharClass::kLetter);
    if (c.cls == CharClass::kNumber) return run_end(text, start, CharClass::kNumber);
    if (c.cls == CharClass::kOther) return symbol_run_end(text, start);
  }
  return trailing_space_end(text, pos);
}

}  // namespace nanoinfer
