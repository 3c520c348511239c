// GPT-2's byte-level alphabet: every byte is spelled as one printable code point in the vocabulary
// (printable Latin-1 bytes as themselves, the rest shifted to U+0100 upwards), so a vocabulary of
// strings can cover arbitrary bytes.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace nanoinfer {

// The code point that spells byte b in a byte-level vocabulary.
uint32_t byte_to_code_point(uint8_t b);

// The bytes a byte-level vocabulary piece stands for, or nullopt when some character of the
// piece is not in the alphabet (HF's ByteLevel decoder then keeps the piece's own UTF-8).
std::optional<std::string> byte_level_unmap(std::string_view piece);

}  // namespace nanoinfer
