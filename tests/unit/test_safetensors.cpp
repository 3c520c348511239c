// safetensors and HF checkpoint directories: round trips of a tiny model written here (each
// dtype, single file and sharded), zero-copy views, and the side files load_model picks up.
#include <gtest/gtest.h>

#include <cstring>

#include "loader/model_loader.h"
#include "loader/safetensors.h"
#include "loader_fixtures.h"

namespace nanoinfer {
namespace {

struct DtypeCase {
  std::string name;  // safetensors spelling
  DType dtype;
};
void PrintTo(const DtypeCase& c, std::ostream* os) {
  *os << c.name;
}

// tiny_weights() encoded in one dtype; f16/bf16 keep the rounded bits, compared bit for bit.
std::string encode(const std::vector<float>& v, DType dtype) {
  if (dtype == DType::F32) return test::f32_bytes(v);
  std::string out;
  for (const float x : v) test::put(out, dtype == DType::F16 ? f32_to_f16(x) : f32_to_bf16(x));
  return out;
}

std::vector<test::StTensor> tiny_tensors(const DtypeCase& d) {
  const ModelConfig c = test::tiny_config();
  const auto shapes = expected_weight_shapes(c);
  std::vector<test::StTensor> out;
  for (const auto& [name, v] : test::tiny_weights(c)) {
    out.push_back({name, d.name, shapes.at(name), encode(v, d.dtype)});
  }
  return out;
}

void write_config(const test::TempDir& dir) {
  test::write_file(dir.file("config.json"), test::tiny_config_json().dump());
}

void expect_weights(const LoadedModel& m, const DtypeCase& d) {
  const auto want = test::tiny_weights(m.config);
  ASSERT_EQ(m.weights.size(), want.size());
  for (const auto& [name, values] : want) {
    const Tensor& t = m.weights.at(name);
    EXPECT_EQ(t.dtype(), d.dtype) << name;
    ASSERT_EQ(t.shape(), expected_weight_shapes(m.config).at(name)) << name;
    const std::string bytes = encode(values, d.dtype);
    ASSERT_EQ(t.nbytes(), bytes.size()) << name;
    EXPECT_EQ(std::memcmp(t.data(), bytes.data(), bytes.size()), 0) << name;
  }
}

class SafetensorsRoundTrip : public testing::TestWithParam<DtypeCase> {};

TEST_P(SafetensorsRoundTrip, SingleFile) {
  test::TempDir dir;
  write_config(dir);
  test::write_file(dir.file("model.safetensors"),
                   test::safetensors_bytes(tiny_tensors(GetParam())));
  const LoadedModel m = load_model(dir.str());
  EXPECT_EQ(m.config.hidden_size, 32);
  EXPECT_EQ(m.weight_format, "safetensors " + std::string(dtype_name(GetParam().dtype)));
  EXPECT_EQ(m.file_bytes,
            m.config.parameter_count() * static_cast<int64_t>(dtype_size(GetParam().dtype)));
  EXPECT_TRUE(m.tokenizer_json.empty());
  expect_weights(m, GetParam());
}

// Three shards listed by model.safetensors.index.json, as save_pretrained(max_shard_size=...)
// writes them.
TEST_P(SafetensorsRoundTrip, Sharded) {
  test::TempDir dir;
  write_config(dir);
  const auto tensors = tiny_tensors(GetParam());
  std::vector<std::vector<test::StTensor>> shards(3);
  nlohmann::json index = {{"metadata", {{"total_size", 0}}},
                          {"weight_map", nlohmann::json::object()}};
  for (size_t i = 0; i < tensors.size(); ++i) {
    const std::string file = "model-0000" + std::to_string(i % 3 + 1) + "-of-00003.safetensors";
    shards[i % 3].push_back(tensors[i]);
    index["weight_map"][tensors[i].name] = file;
  }
  for (size_t s = 0; s < 3; ++s) {
    test::write_file(dir.file("model-0000" + std::to_string(s + 1) + "-of-00003.safetensors"),
                     test::safetensors_bytes(shards[s]));
  }
  test::write_file(dir.file("model.safetensors.index.json"), index.dump());
  const LoadedModel m = load_model(dir.str());
  expect_weights(m, GetParam());
}

INSTANTIATE_TEST_SUITE_P(Dtypes, SafetensorsRoundTrip,
                         testing::Values(DtypeCase{"F32", DType::F32}, DtypeCase{"F16", DType::F16},
                                         DtypeCase{"BF16", DType::BF16}),
                         [](const auto& info) { return info.param.name; });

TEST(SafetensorsFile, TensorsAreViewsIntoTheMapping) {
  test::TempDir dir;
  test::write_file(dir.file("a.safetensors"),
                   test::safetensors_bytes({{"x", "F32", {2, 2}, test::f32_bytes({1, 2, 3, 4})},
                                            {"y", "BF16", {3}, std::string(6, '\0')}}));
  const SafetensorsFile f(dir.file("a.safetensors"));
  const auto bytes = f.file()->bytes();
  for (const auto& [name, t] : f.tensors()) {
    const auto* p = static_cast<const uint8_t*>(t.data());
    EXPECT_TRUE(p >= bytes.data() && p + t.nbytes() <= bytes.data() + bytes.size()) << name;
  }
  EXPECT_EQ(f.tensors().at("x").as<float>()[3], 4.0F);
  EXPECT_EQ(f.tensors().at("y").shape(), std::vector<int64_t>{3});
}

// A tensor whose data starts at an odd offset cannot be viewed as f32 in place; it is copied.
TEST(SafetensorsFile, MisalignedTensorIsCopied) {
  test::TempDir dir;
  test::write_file(dir.file("a.safetensors"),
                   test::safetensors_bytes({{"pad", "BF16", {1}, std::string(2, '\0')},
                                            {"x", "F32", {2}, test::f32_bytes({5, 6})}}));
  const SafetensorsFile f(dir.file("a.safetensors"));
  const Tensor& x = f.tensors().at("x");
  EXPECT_EQ(reinterpret_cast<uintptr_t>(x.data()) % 4, 0U);
  EXPECT_EQ(x.as<float>()[1], 6.0F);
}

TEST(HfCheckpoint, PicksUpSideFilesAndIgnoresRotaryBuffersAndTiedHead) {
  test::TempDir dir;
  nlohmann::json config = test::tiny_config_json();
  config["tie_word_embeddings"] = true;
  test::write_file(dir.file("config.json"), config.dump());
  test::write_file(dir.file("generation_config.json"), R"({"eos_token_id": [2, 3]})");
  test::write_file(dir.file("tokenizer.json"), "{}");
  test::write_file(dir.file("tokenizer_config.json"), "{}");
  auto tensors = tiny_tensors({"F32", DType::F32});  // untied: still carries lm_head.weight
  tensors.push_back(
      {"model.layers.0.self_attn.rotary_emb.inv_freq", "F32", {4}, test::f32_bytes({1, 2, 3, 4})});
  test::write_file(dir.file("model.safetensors"), test::safetensors_bytes(tensors));
  const LoadedModel m = load_model(dir.str());
  EXPECT_TRUE(m.config.tie_word_embeddings);
  EXPECT_EQ(m.config.eos_token_ids, (std::vector<int>{2, 3}));
  EXPECT_EQ(m.tokenizer_json, dir.file("tokenizer.json"));
  EXPECT_EQ(m.tokenizer_config_json, dir.file("tokenizer_config.json"));
  EXPECT_EQ(m.weights.count("lm_head.weight"), 0U);
  EXPECT_EQ(m.file_bytes, m.config.parameter_count() * 4);  // only the weights kept
  EXPECT_EQ(m.weights.count("model.layers.0.self_attn.rotary_emb.inv_freq"), 0U);
  expect_weights(m, {"F32", DType::F32});
}

}  // namespace
}  // namespace nanoinfer
