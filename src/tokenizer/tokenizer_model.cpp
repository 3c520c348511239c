// Builds the lookup tables of a TokenizerModel from a loader's TokenizerSpec.
#include "tokenizer/tokenizer_model.h"

#include <algorithm>
#include <cstdio>

#include "tokenizer/byte_level.h"
#include "util/error.h"

namespace nanoinfer {
namespace {

constexpr std::string_view kSpaceMarker = "\xE2\x96\x81";  // U+2581, SentencePiece's space

// "<0x0A>" -> 10, else -1.
int byte_fallback_value(std::string_view piece) {
  if (piece.size() != 6 || !piece.starts_with("<0x") || piece[5] != '>') return -1;
  int value = 0;
  for (size_t i = 3; i < 5; ++i) {
    const char c = piece[i];
    int digit = -1;
    if (c >= '0' && c <= '9') digit = c - '0';
    if (c >= 'A' && c <= 'F') digit = c - 'A' + 10;
    if (digit < 0) return -1;
    value = value * 16 + digit;
  }
  return value;
}

std::string replace_space_marker(std::string_view piece) {
  std::string out;
  for (size_t pos = 0; pos < piece.size();) {
    if (piece.substr(pos).starts_with(kSpaceMarker)) {
      out += ' ';
      pos += kSpaceMarker.size();
    } else {
      out += piece[pos++];
    }
  }
  return out;
}

std::string hex_byte(int b) {
  char buf[8];
  std::snprintf(buf, sizeof(buf), "0x%02X", b);
  return buf;
}

// SentencePiece BPE merges by score: whenever a piece splits into two pieces of the vocabulary,
// that pair merges into it, with the piece's score as priority. Equal scores share a rank, so the
// leftmost pair wins, as in SentencePiece.
std::vector<Merge> merges_from_scores(const TokenizerModel& m, const std::vector<float>& scores) {
  std::vector<int32_t> order;
  for (int32_t id = 0; id < static_cast<int32_t>(m.pieces.size()); ++id) {
    if (m.byte_value[id] < 0 && !m.special[id]) order.push_back(id);
  }
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return scores[a] > scores[b]; });
  std::vector<Merge> merges;
  int32_t rank = -1;
  for (size_t i = 0; i < order.size(); ++i) {
    if (i == 0 || scores[order[i]] != scores[order[i - 1]]) ++rank;
    const std::string& piece = m.pieces[order[i]];
    for (size_t cut = 1; cut < piece.size(); ++cut) {
      const auto left = m.vocab.find(std::string_view(piece).substr(0, cut));
      const auto right = m.vocab.find(std::string_view(piece).substr(cut));
      if (left != m.vocab.end() && right != m.vocab.end()) {
        merges.push_back({left->second, right->second, order[i], rank});
      }
    }
  }
  return merges;
}

// True when no piece has a space marker preceded by another character ("a▁b", "x▁").
bool markers_only_lead(const std::vector<std::string>& pieces) {
  for (const std::string& piece : pieces) {
    for (size_t pos = piece.find(kSpaceMarker, 1); pos != std::string::npos;
         pos = piece.find(kSpaceMarker, pos + 1)) {
      if (std::string_view(piece).substr(0, pos).ends_with(kSpaceMarker)) continue;
      return false;
    }
  }
  return true;
}

}  // namespace

int32_t find_piece(const std::vector<std::string>& pieces, std::string_view piece) {
  const auto it = std::find(pieces.begin(), pieces.end(), piece);
  return it == pieces.end() ? -1 : static_cast<int32_t>(it - pieces.begin());
}

TokenizerModel build_tokenizer_model(TokenizerSpec spec) {
  TokenizerModel m;
  m.kind = spec.kind;
  m.pre_tokenizer = spec.pre_tokenizer;
  m.ignore_merges = spec.ignore_merges;
  m.prepend_space = spec.prepend_space;
  m.strip_leading_spaces = spec.strip_leading_spaces;
  m.pieces = std::move(spec.pieces);
  const auto n = static_cast<int32_t>(m.pieces.size());
  if (n == 0) fail("tokenizer has an empty vocabulary");

  m.special.assign(n, 0);
  std::vector<uint8_t> is_added(n, 0);
  for (const AddedToken& t : spec.added) {
    if (t.id < 0 || t.id >= n) {
      fail("added token '" + t.content + "' has id " + std::to_string(t.id) +
           " outside the vocabulary (size " + std::to_string(n) + ")");
    }
    m.special[t.id] = t.special ? 1 : 0;
    is_added[t.id] = 1;
  }

  const bool byte_level = m.kind == ModelKind::kByteLevelBpe;
  m.token_text.resize(n);
  m.byte_value.assign(n, -1);
  m.byte_ids.fill(-1);
  for (int32_t id = 0; id < n; ++id) {
    const std::string& piece = m.pieces[id];
    if (byte_level) {
      std::optional<std::string> bytes = byte_level_unmap(piece);
      m.token_text[id] = bytes ? *bytes : piece;
      if (!is_added[id] && bytes) {
        if (bytes->size() == 1) m.byte_ids[static_cast<uint8_t>((*bytes)[0])] = id;
        m.vocab.emplace(*bytes, id);
      }
    } else {
      m.token_text[id] = replace_space_marker(piece);
      const int b = is_added[id] ? -1 : byte_fallback_value(piece);
      m.byte_value[id] = static_cast<int16_t>(b);
      if (b >= 0) m.byte_ids[b] = id;
      if (!is_added[id]) m.vocab.emplace(piece, id);
    }
  }
  // A byte-level vocabulary may lack bytes (SmolLM2 has no token for 0x04); HF then drops such
  // bytes when encoding, and so do we. Byte fallback needs all 256.
  for (int b = 0; b < 256 && !byte_level; ++b) {
    if (m.byte_ids[b] < 0) fail("vocabulary has no byte-fallback token <" + hex_byte(b) + ">");
  }

  std::vector<Merge> merges;
  if (spec.merges.empty() && !spec.scores.empty()) {
    if (spec.scores.size() != m.pieces.size()) fail("tokenizer scores and tokens differ in length");
    merges = merges_from_scores(m, spec.scores);
  } else {
    merges.reserve(spec.merges.size());
    for (size_t rank = 0; rank < spec.merges.size(); ++rank) {
      const auto& [a, b] = spec.merges[rank];
      const auto key = [&](const std::string& piece) -> std::string {
        if (!byte_level) return piece;
        std::optional<std::string> bytes = byte_level_unmap(piece);
        return bytes ? *bytes : piece;
      };
      const auto left = m.vocab.find(key(a));
      const auto right = m.vocab.find(key(b));
      const auto merged = m.vocab.find(key(a + b));
      if (left == m.vocab.end() || right == m.vocab.end() || merged == m.vocab.end()) {
        std::string msg = "merge '";
        msg.append(a).append(" ").append(b).append("' (rank ").append(std::to_string(rank));
        fail(msg + ") uses a piece that is not in the vocabulary");
      }
      merges.push_back({left->second, right->second, merged->second, static_cast<int32_t>(rank)});
    }
  }
  m.merges = MergeTable(merges);
  m.split_at_space_marker = !byte_level && markers_only_lead(m.pieces);
  m.added = AddedTokenMatcher(spec.added);

  for (const std::vector<int32_t>* list : {&spec.prefix_ids, &spec.suffix_ids, &spec.eos_ids}) {
    for (int32_t id : *list) {
      if (id < 0 || id >= n)
        fail("special token id " + std::to_string(id) + " is outside the vocabulary");
    }
  }
  if (spec.bos_id >= n)
    fail("BOS id " + std::to_string(spec.bos_id) + " is outside the vocabulary");
  m.prefix_ids = std::move(spec.prefix_ids);
  m.suffix_ids = std::move(spec.suffix_ids);
  m.bos_id = spec.bos_id;
  m.eos_ids = std::move(spec.eos_ids);
  m.chat_template = std::move(spec.chat_template);
  return m;
}

}  // namespace nanoinfer
