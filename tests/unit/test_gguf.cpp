// GGUF reader: dequantisation of each block type against hand-built blocks, f16/bf16 conversion,
// metadata of every value type, name mapping and the Q/K row un-permutation, a tiny synthetic
// model, and the real default model against HF transformers' load of the same file.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numbers>
#include <set>

#include "backend/cpu/cpu_kernels.h"
#include "engine/batch_builder.h"
#include "loader/gguf.h"
#include "loader/model_loader.h"
#include "loader_fixtures.h"
#include "model/llama.h"
#include "model/rope.h"
#include "random_blocks.h"
#include "test_paths.h"
#include "util/error.h"

namespace nanoinfer {
namespace {

using test::GgufWriter;
using test::put;

struct DequantCase {
  std::string name;
  GgmlType type;
  std::string bytes;
  std::vector<float> expected;
};
void PrintTo(const DequantCase& c, std::ostream* os) {
  *os << c.name;
}

std::string u16s(std::initializer_list<uint16_t> v) {
  std::string s;
  for (const uint16_t x : v) put(s, x);
  return s;
}

// Two Q8_0 blocks: scale 0.5 then 0.25 (f16 0x3800, 0x3400); q = j - 16, ends at -128 and 127.
DequantCase q8_0_case() {
  DequantCase c{"Q8_0", GgmlType::Q8_0, "", {}};
  for (const auto& [d16, d] : {std::pair<uint16_t, float>{0x3800, 0.5F}, {0x3400, 0.25F}}) {
    put(c.bytes, d16);
    for (int j = 0; j < 32; ++j) {
      const int q = j == 0 ? -128 : j == 31 ? 127 : j - 16;
      put(c.bytes, static_cast<int8_t>(q));
      c.expected.push_back(static_cast<float>(q) * d);
    }
  }
  return c;
}

// Q4_0, scale 2 (0x4000): byte j = low nibble j (element j), high nibble 15 - j (element j + 16);
// values are (nibble - 8) * scale.
DequantCase q4_0_case() {
  DequantCase c{"Q4_0", GgmlType::Q4_0, u16s({0x4000}), std::vector<float>(32)};
  for (int j = 0; j < 16; ++j) {
    put(c.bytes, static_cast<uint8_t>(j | ((15 - j) << 4)));
    c.expected[j] = static_cast<float>(j - 8) * 2.0F;
    c.expected[j + 16] = static_cast<float>(15 - j - 8) * 2.0F;
  }
  return c;
}

// Q4_1, scale 0.25 (0x3400), min -1 (0xBC00): values are nibble * scale + min.
DequantCase q4_1_case() {
  DequantCase c{"Q4_1", GgmlType::Q4_1, u16s({0x3400, 0xBC00}), std::vector<float>(32)};
  for (int j = 0; j < 16; ++j) {
    const int hi = (7 * j) % 16;
    put(c.bytes, static_cast<uint8_t>(j | (hi << 4)));
    c.expected[j] = static_cast<float>(j) * 0.25F - 1.0F;
    c.expected[j + 16] = static_cast<float>(hi) * 0.25F - 1.0F;
  }
  return c;
}

std::vector<DequantCase> dequant_cases() {
  return {
      {"F32", GgmlType::F32, test::f32_bytes({1.5F, -0.0F, 3e-40F}), {1.5F, -0.0F, 3e-40F}},
      {"F16",
       GgmlType::F16,
       u16s({0x3C00, 0xC000, 0x0001, 0x7BFF, 0x3555}),
       {1.0F, -2.0F, 0x1p-24F, 65504.0F, 0.333251953125F}},
      {"BF16",
       GgmlType::BF16,
       u16s({0x3F80, 0xC040, 0x4049, 0x0000}),
       {1.0F, -3.0F, 3.140625F, 0.0F}},
      q8_0_case(),
      q4_0_case(),
      q4_1_case(),
  };
}

class DequantTest : public testing::TestWithParam<DequantCase> {};

TEST_P(DequantTest, MatchesHandBuiltBlocks) {
  const DequantCase& c = GetParam();
  const auto n = static_cast<int64_t>(c.expected.size());
  ASSERT_EQ(ggml_nbytes(static_cast<uint32_t>(c.type), n), c.bytes.size());
  std::vector<float> out(c.expected.size(), NAN);
  dequantize(static_cast<uint32_t>(c.type), reinterpret_cast<const uint8_t*>(c.bytes.data()), n,
             out.data());
  for (size_t i = 0; i < out.size(); ++i) EXPECT_EQ(out[i], c.expected[i]) << "element " << i;
}

INSTANTIATE_TEST_SUITE_P(Types, DequantTest, testing::ValuesIn(dequant_cases()),
                         [](const auto& info) { return info.param.name; });

std::string upper(std::string s) {
  for (char& ch : s) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  return s;
}

// The DType a ggml block format is kept as (the same name); F32 (and a failure) for others.
DType kept_as(uint32_t ggml) {
  for (const DType t : test::block_formats())
    if (upper(dtype_name(t)) == ggml_type_name(ggml)) return t;
  ADD_FAILURE() << ggml_type_name(ggml) << " is not a block format we read";
  return DType::F32;
}

// tools/golden/gguf_quant_golden.py: seeded random blocks of every block format we read, widened
// by gguf-py (the code HF transformers loads a GGUF with). The loader's dequantize() and the CPU
// backend's dequantize_rows() (AVX2 for Q8_0 / Q4_0 / Q4_1) must give its values bit for bit.
TEST(GgufQuantGolden, EveryBlockFormatEqualsGgufPy) {
  std::ifstream in(test::data_path("gguf_quant_golden.json"));
  ASSERT_TRUE(in) << "missing tests/data/gguf_quant_golden.json";
  const auto golden = nlohmann::json::parse(in);
  std::set<std::string> seen;
  for (const auto& f : golden["formats"]) {
    const std::string name = f["name"];
    SCOPED_TRACE(name);
    const auto type = f["ggml_type"].get<uint32_t>();
    const std::string hex = f["bytes"];
    std::vector<uint8_t> bytes(hex.size() / 2);
    for (size_t i = 0; i < bytes.size(); ++i)
      bytes[i] = static_cast<uint8_t>(std::stoi(hex.substr(2 * i, 2), nullptr, 16));
    const auto want = f["values"].get<std::vector<float>>();
    const auto n = static_cast<int64_t>(want.size());
    ASSERT_EQ(ggml_nbytes(type, n), bytes.size());
    std::vector<float> got(want.size(), NAN);
    dequantize(type, bytes.data(), n, got.data());
    for (size_t i = 0; i < want.size(); ++i) ASSERT_EQ(got[i], want[i]) << "value " << i;
    EXPECT_EQ(ggml_type_name(type), name);
    std::fill(got.begin(), got.end(), NAN);
    cpu::dequantize_rows(kept_as(type), bytes.data(), 1, n, got.data());
    for (size_t i = 0; i < want.size(); ++i) ASSERT_EQ(got[i], want[i]) << "row value " << i;
    seen.insert(name);
  }
  for (const DType dt : test::block_formats()) EXPECT_EQ(seen.count(upper(dtype_name(dt))), 1U);
}

TEST(GgmlNbytes, RejectsUnsupportedTypesAndPartialBlocks) {
  EXPECT_THROW(ggml_nbytes(16, 256), Error);  // IQ2_XXS
  EXPECT_EQ(ggml_nbytes(14, 512), 420U);      // Q6_K: 210 bytes a block of 256
  EXPECT_THROW(ggml_nbytes(14, 288), Error);
  EXPECT_THROW(ggml_nbytes(static_cast<uint32_t>(GgmlType::Q4_0), 33), Error);
  EXPECT_EQ(ggml_type_name(14), "Q6_K");
  EXPECT_EQ(ggml_type_name(99), "unknown type 99");
}

struct HalfCase {
  uint16_t bits;
  float value;
};

class F16Test : public testing::TestWithParam<HalfCase> {};
TEST_P(F16Test, ConvertsBothWays) {
  EXPECT_EQ(f16_to_f32(GetParam().bits), GetParam().value);
  EXPECT_EQ(f32_to_f16(GetParam().value), GetParam().bits);
}
INSTANTIATE_TEST_SUITE_P(Values, F16Test,
                         testing::Values(HalfCase{0x3C00, 1.0F}, HalfCase{0xC000, -2.0F},
                                         HalfCase{0x7BFF, 65504.0F}, HalfCase{0x0001, 0x1p-24F},
                                         HalfCase{0x0400, 0x1p-14F}, HalfCase{0x8000, -0.0F},
                                         HalfCase{0x7C00, INFINITY}));

class Bf16Test : public testing::TestWithParam<HalfCase> {};
TEST_P(Bf16Test, ConvertsBothWays) {
  EXPECT_EQ(bf16_to_f32(GetParam().bits), GetParam().value);
  EXPECT_EQ(f32_to_bf16(GetParam().value), GetParam().bits);
}
INSTANTIATE_TEST_SUITE_P(Values, Bf16Test,
                         testing::Values(HalfCase{0x3F80, 1.0F}, HalfCase{0xC040, -3.0F},
                                         HalfCase{0x4049, 3.140625F}, HalfCase{0x0001, 0x1p-133F},
                                         HalfCase{0xFF80, -INFINITY}));

// Halfway cases round to the even neighbour; just above halfway rounds up.
TEST(HalfRounding, RoundsToNearestEven) {
  EXPECT_EQ(f32_to_f16(1.0F + 0x1p-11F), 0x3C00);
  EXPECT_EQ(f32_to_f16(1.0F + 3 * 0x1p-11F), 0x3C02);
  EXPECT_EQ(f32_to_f16(1.0F + 0x1p-11F + 0x1p-20F), 0x3C01);
  EXPECT_EQ(f32_to_bf16(1.0F + 0x1p-8F), 0x3F80);
  EXPECT_EQ(f32_to_bf16(1.0F + 3 * 0x1p-8F), 0x3F82);
  EXPECT_EQ(f32_to_f16(70000.0F), 0x7C00);  // past the f16 range
}

TEST(GgufMetadata, ReadsEveryValueType) {
  GgufWriter w;
  std::string b;
  auto raw = [&](const std::string& key, uint32_t type, auto value) {
    b.clear();
    put(b, value);
    w.kv_raw(key, type, b);
  };
  raw("u8", GgufWriter::kU8, uint8_t{200});
  raw("i8", GgufWriter::kI8, int8_t{-100});
  raw("u16", GgufWriter::kU16, uint16_t{60000});
  raw("i16", GgufWriter::kI16, int16_t{-30000});
  raw("u32", GgufWriter::kU32, uint32_t{4000000000U});
  raw("i32", GgufWriter::kI32, int32_t{-2000000000});
  raw("u64", GgufWriter::kU64, uint64_t{1} << 40);
  raw("i64", GgufWriter::kI64, int64_t{-(int64_t{1} << 40)});
  raw("f32", GgufWriter::kF32, 0.25F);
  raw("f64", GgufWriter::kF64, 1e300);
  raw("bool", GgufWriter::kBool, uint8_t{1});
  w.kv_string("str", "héllo");
  w.kv_strings("strs", {"a", "", "bc"});
  b.clear();
  put<uint32_t>(b, GgufWriter::kI16);
  put<uint64_t>(b, 3);
  for (const int16_t v : {-1, 0, 7}) put(b, v);
  w.kv_raw("i16s", GgufWriter::kArray, b);
  b.clear();
  put<uint32_t>(b, GgufWriter::kF32);
  put<uint64_t>(b, 2);
  put(b, 0.5F);
  put(b, -4.0F);
  w.kv_raw("f32s", GgufWriter::kArray, b);
  b.clear();  // an array of two arrays of u8: parsed, kept as an empty list
  put<uint32_t>(b, GgufWriter::kArray);
  put<uint64_t>(b, 2);
  for (int i = 0; i < 2; ++i) {
    put<uint32_t>(b, GgufWriter::kU8);
    put<uint64_t>(b, 1);
    put<uint8_t>(b, 9);
  }
  w.kv_raw("nested", GgufWriter::kArray, b);
  w.kv_u32("after_nested", 5);

  test::TempDir dir;
  test::write_file(dir.file("m.gguf"), w.bytes());
  const GgufFile g(dir.file("m.gguf"));
  EXPECT_EQ(g.get_int("u8"), 200);
  EXPECT_EQ(g.get_int("i8"), -100);
  EXPECT_EQ(g.get_int("u16"), 60000);
  EXPECT_EQ(g.get_int("i16"), -30000);
  EXPECT_EQ(g.get_int("u32"), 4000000000LL);
  EXPECT_EQ(g.get_int("i32"), -2000000000);
  EXPECT_EQ(g.get_int("u64"), int64_t{1} << 40);
  EXPECT_EQ(g.get_int("i64"), -(int64_t{1} << 40));
  EXPECT_EQ(g.get_float("f32"), 0.25);
  EXPECT_EQ(g.get_float("f64"), 1e300);
  EXPECT_TRUE(g.get_bool_or("bool", false));
  EXPECT_EQ(g.get_string("str"), "héllo");
  EXPECT_EQ(g.get_strings("strs"), (std::vector<std::string>{"a", "", "bc"}));
  EXPECT_EQ(g.get_ints("i16s"), (std::vector<int64_t>{-1, 0, 7}));
  EXPECT_EQ(g.get_floats("f32s"), (std::vector<double>{0.5, -4.0}));
  EXPECT_TRUE(g.get_ints("nested").empty());
  EXPECT_EQ(g.get_int("after_nested"), 5);
  EXPECT_EQ(g.get_int_or("absent", 7), 7);
  EXPECT_THROW(g.get_string("u8"), Error);
  EXPECT_THROW(g.get_int("absent"), Error);
}

TEST(GgufTensors, ShapesAreRowMajorAndAlignmentIsHonoured) {
  GgufWriter w;
  w.alignment(64);
  std::vector<float> a(6);
  for (int i = 0; i < 6; ++i) a[i] = static_cast<float>(i);
  w.tensor("a", 0, {2, 3}, test::f32_bytes(a));
  w.tensor("b", 0, {4}, test::f32_bytes({7, 8, 9, 10}));
  test::TempDir dir;
  test::write_file(dir.file("a.gguf"), w.bytes());
  const GgufFile g(dir.file("a.gguf"));
  ASSERT_EQ(g.tensors().size(), 2U);
  EXPECT_EQ(g.tensors()[0].shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(g.tensors()[1].offset, 64U);
  EXPECT_EQ(g.load_f32(g.tensors()[0]).as<float>()[5], 5.0F);
  EXPECT_EQ(g.load_f32(*g.find("b")).as<float>()[3], 10.0F);
}

struct NameCase {
  std::string gguf;
  std::string hf;
};
void PrintTo(const NameCase& c, std::ostream* os) {
  *os << c.gguf;
}
class GgufNameTest : public testing::TestWithParam<NameCase> {};
TEST_P(GgufNameTest, MapsToHfName) {
  EXPECT_EQ(hf_name_from_gguf(GetParam().gguf), GetParam().hf);
}
INSTANTIATE_TEST_SUITE_P(
    Names, GgufNameTest,
    testing::Values(NameCase{"token_embd.weight", "model.embed_tokens.weight"},
                    NameCase{"output_norm.weight", "model.norm.weight"},
                    NameCase{"output.weight", "lm_head.weight"},
                    NameCase{"blk.0.attn_q.weight", "model.layers.0.self_attn.q_proj.weight"},
                    NameCase{"blk.12.attn_k.weight", "model.layers.12.self_attn.k_proj.weight"},
                    NameCase{"blk.1.attn_v.weight", "model.layers.1.self_attn.v_proj.weight"},
                    NameCase{"blk.1.attn_output.weight", "model.layers.1.self_attn.o_proj.weight"},
                    NameCase{"blk.2.ffn_gate.weight", "model.layers.2.mlp.gate_proj.weight"},
                    NameCase{"blk.2.ffn_up.weight", "model.layers.2.mlp.up_proj.weight"},
                    NameCase{"blk.2.ffn_down.weight", "model.layers.2.mlp.down_proj.weight"},
                    NameCase{"blk.3.attn_norm.weight", "model.layers.3.input_layernorm.weight"},
                    NameCase{"blk.3.ffn_norm.weight",
                             "model.layers.3.post_attention_layernorm.weight"},
                    NameCase{"blk.x.attn_q.weight", "blk.x.attn_q.weight"},
                    NameCase{"blk.0.attn_q.bias", "blk.0.attn_q.bias"},
                    NameCase{"rope_freqs.weight", "rope_freqs.weight"}));

// The worked example of docs/pseudocode/loaders.md: head_dim 4, two heads, one column. The file's
// rows of head 0 hold HF rows 0, 2, 1, 3 (pairs (0,1) and (2,3) are HF's (0,2) and (1,3)).
TEST(UnpermuteQk, RestoresRotateHalfRowOrder) {
  Tensor w = Tensor::zeros(DType::F32, {8, 1});
  const std::vector<float> file_rows = {0, 2, 1, 3, 4, 6, 5, 7};
  std::copy(file_rows.begin(), file_rows.end(), w.as<float>());
  unpermute_qk_rows(w, 2);
  for (int r = 0; r < 8; ++r) EXPECT_EQ(w.as<float>()[r], static_cast<float>(r)) << "row " << r;
}

TEST(UnpermuteQk, InvertsTheConverterPermutation) {
  constexpr int64_t kRows = 48;
  constexpr int64_t kCols = 3;
  std::vector<float> hf(kRows * kCols);
  for (size_t i = 0; i < hf.size(); ++i) hf[i] = static_cast<float>(i);
  for (const int heads : {1, 3, 6}) {
    Tensor w = Tensor::zeros(DType::F32, {kRows, kCols});
    const auto file = test::permute_like_llama_cpp(hf, kRows, kCols, heads);
    std::copy(file.begin(), file.end(), w.as<float>());
    unpermute_qk_rows(w, heads);
    EXPECT_EQ(std::vector<float>(w.as<float>(), w.as<float>() + hf.size()), hf)
        << heads << " heads";
  }
}

void expect_tiny_weights(const LoadedModel& m) {
  const auto want = test::tiny_weights(m.config);
  ASSERT_EQ(m.weights.size(), want.size());
  for (const auto& [name, values] : want) {
    const Tensor& t = m.weights.at(name);
    ASSERT_EQ(t.dtype(), DType::F32) << name;
    ASSERT_EQ(static_cast<size_t>(t.numel()), values.size()) << name;
    EXPECT_EQ(std::vector<float>(t.as<float>(), t.as<float>() + t.numel()), values) << name;
  }
}

// GGUF v2 and v3 share the layout (v1, with 32-bit counts, is refused).
class GgufVersionTest : public testing::TestWithParam<uint32_t> {};

TEST_P(GgufVersionTest, LoadsTinyModelInHfLayout) {
  test::TempDir dir;
  test::write_file(dir.file("tiny.gguf"), test::tiny_gguf().bytes(GetParam()));
  const LoadedModel m = load_model(dir.file("tiny.gguf"));
  const ModelConfig want = test::tiny_config();
  EXPECT_EQ(m.config.hidden_size, want.hidden_size);
  EXPECT_EQ(m.config.num_layers, want.num_layers);
  EXPECT_EQ(m.config.num_heads, want.num_heads);
  EXPECT_EQ(m.config.num_kv_heads, want.num_kv_heads);
  EXPECT_EQ(m.config.head_dim, want.head_dim);
  EXPECT_EQ(m.config.vocab_size, want.vocab_size);
  EXPECT_EQ(m.config.max_position_embeddings, want.max_position_embeddings);
  EXPECT_EQ(m.config.bos_token_id, 1);
  EXPECT_EQ(m.config.eos_token_ids, std::vector<int>{2});
  EXPECT_FALSE(m.config.tie_word_embeddings);
  EXPECT_EQ(m.weight_format, "gguf F32 (dequantised to f32)");
  EXPECT_EQ(m.file_bytes, m.config.parameter_count() * 4);
  expect_tiny_weights(m);
}

INSTANTIATE_TEST_SUITE_P(Versions, GgufVersionTest, testing::Values(2U, 3U));

// A Llama-3.x instruct GGUF names <|eot_id|> (and <|eom_id|>) beside its EOS: generation stops at
// each, once each, as at the ids HF's generation_config lists.
TEST(GgufModel, EndOfTurnTokensEndGenerationToo) {
  GgufWriter w = test::tiny_gguf();
  w.kv_u32("tokenizer.ggml.eot_token_id", 5);
  w.kv_u32("tokenizer.ggml.eom_token_id", 2);  // the EOS again: listed once
  test::TempDir dir;
  test::write_file(dir.file("eot.gguf"), w.bytes());
  EXPECT_EQ(load_model(dir.file("eot.gguf")).config.eos_token_ids, (std::vector<int>{2, 5}));
  EXPECT_EQ(GgufFile(dir.file("eot.gguf")).eos_ids(), (std::vector<int32_t>{2, 5}));
}

TEST(GgufModel, NoOutputTensorMeansTiedEmbeddings) {
  test::TempDir dir;
  test::write_file(dir.file("tied.gguf"), test::tiny_gguf("output.weight").bytes());
  const LoadedModel m = load_model(dir.file("tied.gguf"));
  EXPECT_TRUE(m.config.tie_word_embeddings);
  EXPECT_EQ(m.weights.count("lm_head.weight"), 0U);
  expect_tiny_weights(m);
}

// llama.cpp's converter stores Llama-3.1's llama3 RoPE scaling as rope_freqs.weight, one divisor
// per frequency: 1 for short wavelengths, `factor` for long ones, 1 / ((1 - s) / factor + s) in
// the band between (s the same blend HF's rope code uses).
std::vector<float> llama3_rope_freqs(const ModelConfig& c) {
  const RopeScaling& r = c.rope_scaling;
  const double low = r.original_max_position / double{r.low_freq_factor};
  const double high = r.original_max_position / double{r.high_freq_factor};
  std::vector<float> out;
  for (int i = 0; i < c.head_dim / 2; ++i) {
    const double wavelen =
        2 * std::numbers::pi * std::pow(double{c.rope_theta}, 2.0 * i / c.head_dim);
    if (wavelen < high) {
      out.push_back(1.0F);
    } else if (wavelen > low) {
      out.push_back(r.factor);
    } else {
      const double s = (r.original_max_position / wavelen - r.low_freq_factor) /
                       (r.high_freq_factor - r.low_freq_factor);
      out.push_back(static_cast<float>(1.0 / ((1 - s) / r.factor + s)));
    }
  }
  return out;
}

// A HF model written as llama.cpp writes a Llama-3.1 GGUF: f32, Q/K rows permuted, the scaling as
// rope_freqs.weight (left out on request) and no rope scaling metadata.
std::string as_llama31_gguf(const LoadedModel& hf, bool with_freqs) {
  const ModelConfig& c = hf.config;
  GgufWriter w;
  test::add_tiny_gguf_metadata(w, c);
  for (const auto& g : test::gguf_names(c)) {
    const Tensor& t = hf.weights.at(hf_name_from_gguf(g));
    std::vector<float> v(t.as<float>(), t.as<float>() + t.numel());
    if (g.find("attn_q.") != std::string::npos)
      v = test::permute_like_llama_cpp(v, t.dim(0), t.dim(1), c.num_heads);
    if (g.find("attn_k.") != std::string::npos)
      v = test::permute_like_llama_cpp(v, t.dim(0), t.dim(1), c.num_kv_heads);
    w.tensor(g, 0, t.shape(), test::f32_bytes(v));
  }
  if (with_freqs) {
    const std::vector<float> f = llama3_rope_freqs(c);
    w.tensor("rope_freqs.weight", 0, {static_cast<int64_t>(f.size())}, test::f32_bytes(f));
  }
  return w.bytes();
}

// The tiny llama3-RoPE model as a Llama-3.1-style GGUF gives HF's logits of the checkpoint (1e-4,
// as TinyParity); without its rope_freqs tensor the same weights miss them by far, so the factors
// are what carries the scaling.
TEST(GgufModel, RopeFreqsGiveTheLlama3RopeOfTheHfCheckpoint) {
  const LoadedModel hf = load_model(test::data_path("models/llama3_rope"));
  ASSERT_EQ(hf.config.rope_scaling.type, RopeScaling::Type::Llama3);
  const nlohmann::json ref = test::read_json("models/llama3_rope/reference.json");
  ASSERT_FALSE(ref["cases"].empty());
  auto be = make_cpu_backend();
  test::TempDir dir;
  for (const bool with_freqs : {true, false}) {
    SCOPED_TRACE(with_freqs ? "with rope_freqs" : "without rope_freqs");
    test::write_file(dir.file("m.gguf"), as_llama31_gguf(hf, with_freqs));
    const LoadedModel g = load_model(dir.file("m.gguf"));
    EXPECT_EQ(g.weights.count("rope_freqs.weight"), 0U);
    float worst = 0;  // a NaN sticks
    LlamaModel model(g, *be, 256);
    for (const auto& rc : ref["cases"]) {
      KvCache cache(*be, g.config, {16, 16, "post"});
      SeqState s(0, cache.create_sequence(), rc["prompt_ids"].get<std::vector<int32_t>>());
      std::vector<float> logits;
      be->to_host_f32(model.forward(build_batch({&s}, cache), cache), logits);
      const auto want = rc["last_logits"].get<std::vector<float>>();
      ASSERT_EQ(logits.size(), want.size());
      for (size_t i = 0; i < want.size(); ++i) {
        const float d = std::abs(logits[i] - want[i]);
        worst = std::isnan(d) || d > worst ? d : worst;
      }
    }
    if (with_freqs) {
      EXPECT_EQ(g.config.rope_scaling.type, RopeScaling::Type::FreqFactors);
      const std::vector<float> a = rope_inv_freq(g.config), b = rope_inv_freq(hf.config);
      ASSERT_EQ(a.size(), b.size());
      for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-6F * b[i]) << i;
      EXPECT_LE(worst, 1e-4F);
    } else {
      EXPECT_EQ(g.config.rope_scaling.type, RopeScaling::Type::None);
      EXPECT_GT(worst, 1e-2F);
    }
  }
}

// With LoadOptions::dequantize off, matrices keep their blocks and Q/K move whole block rows;
// widening those rows must give exactly the dequantised load, and the CPU backend's forward over
// the kept blocks (widened tile by tile) exactly the forward over the dequantised weights.
// One format for every matrix, or (a second one given) llama.cpp's Q4_K_M kind of mix: attn_v and
// ffn_down in the second format, so the fused q|k|v holds two formats.
struct BlockMix {
  GgmlType main;
  GgmlType v_down;
};

class KeptBlocksTest : public testing::TestWithParam<BlockMix> {};

TEST_P(KeptBlocksTest, MatchDequantisedLoad) {
  const ModelConfig c = test::wide_config();
  auto ggml_of = [](const std::string& hf_name) {
    const bool second = hf_name.ends_with("v_proj.weight") || hf_name.ends_with("down_proj.weight");
    return static_cast<uint32_t>(second ? GetParam().v_down : GetParam().main);
  };
  test::TempDir dir;
  test::write_file(dir.file("q.gguf"), test::random_blocks_gguf(c, ggml_of));
  const LoadedModel f32 = load_model(dir.file("q.gguf"));
  LoadOptions keep;
  keep.dequantize = false;
  const LoadedModel blocks = load_model(dir.file("q.gguf"), keep);
  ASSERT_EQ(blocks.weights.size(), f32.weights.size());
  for (const auto& [name, a] : f32.weights) {
    const Tensor& b = blocks.weights.at(name);
    ASSERT_EQ(b.shape(), a.shape()) << name;
    if (a.rank() == 1) continue;
    EXPECT_EQ(b.dtype(), kept_as(ggml_of(name))) << name;
    std::vector<float> row(static_cast<size_t>(a.dim(1)));
    for (int64_t r = 0; r < a.dim(0); ++r) {
      dequantize(ggml_of(name), static_cast<const uint8_t*>(b.row(r).data()), a.dim(1), row.data());
      const float* want = a.row(r).as<float>();
      ASSERT_EQ(row, std::vector<float>(want, want + a.dim(1))) << name << " row " << r;
    }
  }
  auto be = make_cpu_backend();
  std::vector<std::vector<float>> logits;
  for (const LoadedModel* m : {&f32, &blocks}) {
    LlamaModel model(*m, *be, 16);
    KvCache cache(*be, m->config, {16, 1, "post"});
    SeqState s(0, cache.create_sequence(), {3, 1, 4, 1, 5, 9});
    be->to_host_f32(model.forward(build_batch({&s}, cache), cache), logits.emplace_back());
  }
  for (const float v : logits[0]) ASSERT_TRUE(std::isfinite(v));
  EXPECT_EQ(logits[1], logits[0]);
}

std::vector<BlockMix> block_mixes() {
  std::vector<BlockMix> out;
  for (const GgmlType t : {GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0,
                           GgmlType::Q5_1, GgmlType::IQ4_NL, GgmlType::Q2_K, GgmlType::Q3_K,
                           GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K, GgmlType::IQ4_XS})
    out.push_back({t, t});
  out.push_back({GgmlType::Q4_K, GgmlType::Q6_K});
  out.push_back({GgmlType::Q5_0, GgmlType::Q8_0});
  return out;
}

INSTANTIATE_TEST_SUITE_P(Types, KeptBlocksTest, testing::ValuesIn(block_mixes()),
                         [](const auto& info) {
                           const auto name = [](GgmlType t) {
                             return ggml_type_name(static_cast<uint32_t>(t));
                           };
                           return info.param.main == info.param.v_down
                                      ? name(info.param.main)
                                      : name(info.param.main) + "_with_" + name(info.param.v_down);
                         });

class DefaultModel : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string path = test::default_model_path();
    if (!path.empty()) model_ = std::make_unique<LoadedModel>(load_model(path));
  }
  static void TearDownTestSuite() { model_.reset(); }
  void SetUp() override {
    if (!model_)
      GTEST_SKIP() << "default model not fetched (run `make run` or scripts/fetch_model.sh)";
  }
  static std::unique_ptr<LoadedModel> model_;
};
std::unique_ptr<LoadedModel> DefaultModel::model_;

TEST_F(DefaultModel, ConfigIsSmolLm2_135M) {
  const ModelConfig& c = model_->config;
  EXPECT_EQ(c.hidden_size, 576);
  EXPECT_EQ(c.num_layers, 30);
  EXPECT_EQ(c.num_heads, 9);
  EXPECT_EQ(c.num_kv_heads, 3);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.intermediate_size, 1536);
  EXPECT_EQ(c.vocab_size, 49152);
  EXPECT_EQ(c.max_position_embeddings, 8192);
  EXPECT_EQ(c.rope_theta, 100000.0F);
  EXPECT_EQ(c.rms_norm_eps, 1e-5F);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_EQ(c.eos_token_ids, std::vector<int>{2});
  EXPECT_EQ(c.parameter_count(), 134515008);
  EXPECT_EQ(model_->weight_format, "gguf Q4_1+Q8_0+F32 (dequantised to f32)");
}

// tools/golden/gguf_weights_golden.py: rows of each tensor as HF transformers loads this GGUF.
TEST_F(DefaultModel, WeightsMatchHfTransformersLoad) {
  std::ifstream in(test::data_path("gguf_weights_golden.json"));
  ASSERT_TRUE(in) << "missing tests/data/gguf_weights_golden.json";
  const auto golden = nlohmann::json::parse(in);
  int checked = 0;
  for (const auto& [name, entry] : golden["tensors"].items()) {
    ASSERT_EQ(model_->weights.count(name), 1U) << name;
    const Tensor& t = model_->weights.at(name);
    EXPECT_EQ(t.shape(), entry["shape"].get<std::vector<int64_t>>()) << name;
    const int64_t cols = t.rank() == 1 ? t.numel() : t.dim(1);
    for (const auto& [row, values] : entry["rows"].items()) {
      const float* p = t.as<float>() + std::stoll(row) * cols;
      for (size_t i = 0; i < values.size(); ++i) {
        EXPECT_EQ(p[i], values[i].get<float>()) << name << " row " << row << " col " << i;
        ++checked;
      }
    }
  }
  EXPECT_GT(checked, 500);
}

}  // namespace
}  // namespace nanoinfer
