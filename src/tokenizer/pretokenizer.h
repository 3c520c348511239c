// Hand-written equivalents of the pre-tokenizer regexes of byte-level BPE models. Each function
// returns the end of the pre-token that starts at `pos` (pos < text.size()), so the caller walks
// the text without allocating. Bytes that are not valid UTF-8 count as one "other" character each
// (neither letter, number nor space), i.e. they group like punctuation.
#pragma once

#include <cstddef>
#include <string_view>

namespace nanoinfer {

enum class PreTokenizer { kNone, kLlama3, kGpt2 };

// Llama-3:
//   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*
//   |\s*[\r\n]+|\s+(?!\S)|\s+
size_t llama3_pretoken_end(std::string_view text, size_t pos);

// GPT-2 (HF ByteLevel with use_regex), also SmolLM2:
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
size_t gpt2_pretoken_end(std::string_view text, size_t pos);

}  // namespace nanoinfer
