// Tokenizer::encode: split out added tokens, then per segment either pre-tokenize + byte-level BPE
// (with a per-call cache of pre-token results, since natural text repeats words a lot) or
// SentencePiece normalisation + BPE over the whole segment; finally the post-processor's tokens.
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

  // Metaspace normalisation ("▁" for spaces, one in front), then one symbol per character of the
  // vocabulary, or the character's bytes as <0xNN> tokens when it is not in the vocabulary.
  void encode_sentencepiece(std::string_view segment, std::vector<int32_t>& out) {
    symbols_.clear();
    if (m_.prepend_space) push_char(kSpaceMarker);
    for (size_t pos = 0; pos < segment.size();) {
      if (segment[pos] == ' ') {
        push_char(kSpaceMarker);
        ++pos;
        continue;
      }
      const Utf8Step step = decode_utf8(segment, pos);
      push_char(segment.substr(pos, step.len));
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
