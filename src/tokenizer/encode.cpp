// Tokenizer::encode: split out added tokens, then per segment either pre-tokenize + byte-level BPE
// (with a per-call cache of pre-token results, since natural text repeats words a lot) or
// SentencePiece normalisation + BPE over the whole segment; finally the post-processor's tokens.
#include <deque>
#include <string>
#include <unordered_map>

#include "nanoinfer/tokenizer.h"
#include "tokenizer/tokenizer_model.h"
#include "tokenizer/unicode.h"

namespace nanoinfer {
namespace {

constexpr std::string_view kSpaceMarker = "\xE2\x96\x81";  // U+2581

class SegmentEncoder {
 public:
  explicit SegmentEncoder(const TokenizerModel& model) : m_(model) {}

  void encode(std::string_view segment, std::vector<int32_t>& out) {
    if (segment.empty()) return;
    if (m_.kind == ModelKind::kSentencePieceBpe) {
      encode_sentencepiece(segment, out);
      return;
    }
    for (size_t pos = 0; pos < segment.size();) {
      const size_t end = pretoken_end(segment, pos);
      encode_pretoken(segment.substr(pos, end - pos), out);
      pos = end;
    }
  }

 private:
  size_t pretoken_end(std::string_view text, size_t pos) const {
    switch (m_.pre_tokenizer) {
      case PreTokenizer::kLlama3:
        return llama3_pretoken_end(text, pos);
      case PreTokenizer::kGpt2:
        return gpt2_pretoken_end(text, pos);
      case PreTokenizer::kNone:
        break;
    }
    return text.size();
  }

  void encode_pretoken(std::string_view word, std::vector<int32_t>& out) {
    if (const auto hit = cache_.find(word); hit != cache_.end()) {
      out.insert(out.end(), cached_ids_.begin() + hit->second.first,
                 cached_ids_.begin() + hit->second.second);
      return;
    }
    const size_t begin = cached_ids_.size();
    const auto whole = m_.ignore_merges ? m_.vocab.find(word) : m_.vocab.end();
    if (whole != m_.vocab.end()) {
      cached_ids_.push_back(whole->second);
    } else {
      symbols_.clear();
      for (char c : word) {
        const int32_t id = m_.byte_ids[static_cast<uint8_t>(c)];
        if (id >= 0) symbols_.push_back(id);
      }
      apply_merges(m_.merges, symbols_, scratch_);
      cached_ids_.insert(cached_ids_.end(), symbols_.begin(), symbols_.end());
    }
    cache_.emplace(word, std::make_pair(begin, cached_ids_.size()));
    out.insert(out.end(), cached_ids_.begin() + begin, cached_ids_.end());
  }

  // Metaspace normalisation ("▁" for spaces, one in front), then BPE. When the vocabulary allows
  // it (TokenizerModel::split_at_space_marker), each "▁"-led word is merged on its own and cached.
  void encode_sentencepiece(std::string_view segment, std::vector<int32_t>& out) {
    std::string& norm = normalized_.emplace_back();
    norm.reserve(segment.size() + segment.size() / 4 + kSpaceMarker.size());
    if (m_.prepend_space) norm += kSpaceMarker;
    for (char c : segment) {
      if (c == ' ') {
        norm += kSpaceMarker;
      } else {
        norm += c;
      }
    }
    if (!m_.split_at_space_marker) {
      merge_sentencepiece_word(norm, out);
      return;
    }
    size_t start = 0;
    for (size_t pos = 0; pos < norm.size();) {
      const bool marker = std::string_view(norm).substr(pos).starts_with(kSpaceMarker);
      // A word starts at a marker that follows something other than a marker.
      if (marker && pos > start && !std::string_view(norm).substr(0, pos).ends_with(kSpaceMarker)) {
        encode_cached(std::string_view(norm).substr(start, pos - start), out);
        start = pos;
      }
      pos += marker ? kSpaceMarker.size() : 1;
    }
    encode_cached(std::string_view(norm).substr(start), out);
  }

  void encode_cached(std::string_view word, std::vector<int32_t>& out) {
    if (const auto hit = cache_.find(word); hit != cache_.end()) {
      out.insert(out.end(), cached_ids_.begin() + hit->second.first,
                 cached_ids_.begin() + hit->second.second);
      return;
    }
    const size_t begin = cached_ids_.size();
    merge_sentencepiece_word(word, cached_ids_);
    cache_.emplace(word, std::make_pair(begin, cached_ids_.size()));
    out.insert(out.end(), cached_ids_.begin() + begin, cached_ids_.end());
  }

  // One symbol per character of the vocabulary, or the character's bytes as <0xNN> tokens when it
  // is not in the vocabulary (invalid UTF-8 bytes too), then merges.
  void merge_sentencepiece_word(std::string_view word, std::vector<int32_t>& out) {
    symbols_.clear();
    for (size_t pos = 0; pos < word.size();) {
      const Utf8Step step = decode_utf8(word, pos);
      push_char(word.substr(pos, step.len));
      pos += step.len;
    }
    apply_merges(m_.merges, symbols_, scratch_);
    out.insert(out.end(), symbols_.begin(), symbols_.end());
  }

  void push_char(std::string_view ch) {
    const auto it = m_.vocab.find(ch);
    if (it != m_.vocab.end()) {
      symbols_.push_back(it->second);
      return;
    }
    for (char c : ch) symbols_.push_back(m_.byte_ids[static_cast<uint8_t>(c)]);
  }

  const TokenizerModel& m_;
  // Pre-token -> [begin, end) in cached_ids_. Keys view the caller's text, alive for this call.
  std::unordered_map<std::string_view, std::pair<size_t, size_t>> cache_;
  std::vector<int32_t> cached_ids_;
  std::deque<std::string> normalized_;  // SentencePiece segments; cache keys view into them
  std::vector<int32_t> symbols_;
  BpeScratch scratch_;
};

}  // namespace

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  const TokenizerModel& m = *model_;
  std::vector<int32_t> out;
  if (add_special_tokens) out = m.prefix_ids;
  SegmentEncoder encoder(m);
  for (size_t pos = 0; pos <= text.size();) {
    const AddedTokenMatcher::Match match = m.added.find(text, pos);
    encoder.encode(text.substr(pos, match.begin - pos), out);
    if (match.id < 0) break;
    out.push_back(match.id);
    pos = match.end;
  }
  if (add_special_tokens) out.insert(out.end(), m.suffix_ids.begin(), m.suffix_ids.end());
  return out;
}

}  // namespace nanoinfer
