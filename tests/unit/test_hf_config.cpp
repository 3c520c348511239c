// parse_hf_config: the defaults transformers applies, both RoPE spellings (4.x rope_scaling /
// rope_theta, 5.x rope_parameters), EOS ids from config.json and generation_config.json, and the
// errors for configs nanoinfer cannot run.
#include <gtest/gtest.h>

#include <functional>

#include "loader/model_loader.h"
#include "loader_fixtures.h"
#include "util/error.h"

namespace nanoinfer {
namespace {

using nlohmann::json;

// Writes tiny_config_json() with `patch` merged in (null removes a key) and parses it.
ModelConfig parse_patched(const json& patch, const json& generation = nullptr) {
  test::TempDir dir;
  json config = test::tiny_config_json();
  config.merge_patch(patch);
  test::write_file(dir.file("config.json"), config.dump());
  std::string gen_path;
  if (!generation.is_null()) {
    gen_path = dir.file("generation_config.json");
    test::write_file(gen_path, generation.dump());
  }
  return parse_hf_config(dir.file("config.json"), gen_path);
}

struct ConfigCase {
  std::string name;
  json patch;
  json generation;
  std::function<void(const ModelConfig&)> check;
};
void PrintTo(const ConfigCase& c, std::ostream* os) {
  *os << c.name;
}

class HfConfigTest : public testing::TestWithParam<ConfigCase> {};

TEST_P(HfConfigTest, Parses) {
  GetParam().check(parse_patched(GetParam().patch, GetParam().generation));
}

using Type = RopeScaling::Type;

INSTANTIATE_TEST_SUITE_P(
    Configs, HfConfigTest,
    testing::Values(ConfigCase{"AsWritten", json::object(), nullptr,
                               [](const ModelConfig& c) {
                                 const ModelConfig want = test::tiny_config();
                                 EXPECT_EQ(c.vocab_size, want.vocab_size);
                                 EXPECT_EQ(c.hidden_size, want.hidden_size);
                                 EXPECT_EQ(c.intermediate_size, want.intermediate_size);
                                 EXPECT_EQ(c.num_layers, want.num_layers);
                                 EXPECT_EQ(c.num_heads, want.num_heads);
                                 EXPECT_EQ(c.num_kv_heads, want.num_kv_heads);
                                 EXPECT_EQ(c.head_dim, 8);
                                 EXPECT_EQ(c.rms_norm_eps, want.rms_norm_eps);
                                 EXPECT_EQ(c.rope_theta, want.rope_theta);
                                 EXPECT_EQ(c.rope_scaling.type, Type::None);
                                 EXPECT_EQ(c.max_position_embeddings, want.max_position_embeddings);
                                 EXPECT_FALSE(c.tie_word_embeddings);
                                 EXPECT_EQ(c.bos_token_id, 1);
                                 EXPECT_EQ(c.eos_token_ids, std::vector<int>{2});
                               }},
                    ConfigCase{"KvHeadsDefaultToHeads",
                               {{"num_key_value_heads", nullptr}},
                               nullptr,
                               [](const ModelConfig& c) { EXPECT_EQ(c.num_kv_heads, 4); }},
                    ConfigCase{"ExplicitHeadDim",
                               {{"head_dim", 16}},
                               nullptr,
                               [](const ModelConfig& c) { EXPECT_EQ(c.head_dim, 16); }},
                    ConfigCase{"MissingOptionalsTakeLlamaDefaults",
                               {{"rms_norm_eps", nullptr},
                                {"rope_theta", nullptr},
                                {"max_position_embeddings", nullptr},
                                {"tie_word_embeddings", nullptr},
                                {"bos_token_id", nullptr}},
                               nullptr,
                               [](const ModelConfig& c) {
                                 EXPECT_EQ(c.rms_norm_eps, 1e-6F);
                                 EXPECT_EQ(c.rope_theta, 10000.0F);
                                 EXPECT_EQ(c.max_position_embeddings, 2048);
                                 EXPECT_FALSE(c.tie_word_embeddings);
                                 EXPECT_EQ(c.bos_token_id, -1);
                               }},
                    ConfigCase{"ModelTypeLlamaWithoutArchitectures",
                               {{"architectures", nullptr}, {"tie_word_embeddings", true}},
                               nullptr,
                               [](const ModelConfig& c) { EXPECT_TRUE(c.tie_word_embeddings); }},
                    ConfigCase{"Llama3RopeScaling4x",
                               {{"rope_theta", 500000.0},
                                {"rope_scaling",
                                 {{"rope_type", "llama3"},
                                  {"factor", 32.0},
                                  {"low_freq_factor", 1.0},
                                  {"high_freq_factor", 4.0},
                                  {"original_max_position_embeddings", 8192}}}},
                               nullptr,
                               [](const ModelConfig& c) {
                                 EXPECT_EQ(c.rope_theta, 500000.0F);
                                 EXPECT_EQ(c.rope_scaling.type, Type::Llama3);
                                 EXPECT_EQ(c.rope_scaling.factor, 32.0F);
                                 EXPECT_EQ(c.rope_scaling.low_freq_factor, 1.0F);
                                 EXPECT_EQ(c.rope_scaling.high_freq_factor, 4.0F);
                                 EXPECT_EQ(c.rope_scaling.original_max_position, 8192);
                               }},
                    ConfigCase{"Llama3RopeParameters5x",
                               {{"rope_theta", nullptr},
                                {"rope_parameters",
                                 {{"rope_type", "llama3"},
                                  {"rope_theta", 500000.0},
                                  {"factor", 8.0},
                                  {"low_freq_factor", 2.0},
                                  {"high_freq_factor", 4.0},
                                  {"original_max_position_embeddings", 64}}}},
                               nullptr,
                               [](const ModelConfig& c) {
                                 EXPECT_EQ(c.rope_theta, 500000.0F);
                                 EXPECT_EQ(c.rope_scaling.type, Type::Llama3);
                                 EXPECT_EQ(c.rope_scaling.factor, 8.0F);
                                 EXPECT_EQ(c.rope_scaling.low_freq_factor, 2.0F);
                                 EXPECT_EQ(c.rope_scaling.original_max_position, 64);
                               }},
                    ConfigCase{"LinearRopeOldTypeKey",
                               {{"rope_scaling", {{"type", "linear"}, {"factor", 2.0}}}},
                               nullptr,
                               [](const ModelConfig& c) {
                                 EXPECT_EQ(c.rope_scaling.type, Type::Linear);
                                 EXPECT_EQ(c.rope_scaling.factor, 2.0F);
                               }},
                    ConfigCase{
                        "DefaultRopeParameters",
                        {{"rope_theta", nullptr},
                         {"rope_parameters", {{"rope_type", "default"}, {"rope_theta", 100000.0}}}},
                        nullptr,
                        [](const ModelConfig& c) {
                          EXPECT_EQ(c.rope_scaling.type, Type::None);
                          EXPECT_EQ(c.rope_theta, 100000.0F);
                        }},
                    ConfigCase{"EosList",
                               {{"eos_token_id", {2, 3}}, {"bos_token_id", {1}}},
                               nullptr,
                               [](const ModelConfig& c) {
                                 EXPECT_EQ(c.eos_token_ids, (std::vector<int>{2, 3}));
                                 EXPECT_EQ(c.bos_token_id, 1);
                               }},
                    ConfigCase{"GenerationConfigEosComeFirst",
                               json::object(),
                               {{"eos_token_id", {3, 5, 2}}},
                               [](const ModelConfig& c) {
                                 EXPECT_EQ(c.eos_token_ids, (std::vector<int>{3, 5, 2}));
                               }},
                    ConfigCase{"GenerationConfigSingleEosExtends",
                               json::object(),
                               {{"eos_token_id", 7}},
                               [](const ModelConfig& c) {
                                 EXPECT_EQ(c.eos_token_ids, (std::vector<int>{7, 2}));
                               }}),
    [](const auto& info) { return info.param.name; });

struct BadConfigCase {
  std::string name;
  json patch;
  std::string message;
};
void PrintTo(const BadConfigCase& c, std::ostream* os) {
  *os << c.name;
}

class HfConfigErrorTest : public testing::TestWithParam<BadConfigCase> {};

TEST_P(HfConfigErrorTest, NamesTheProblem) {
  const std::string msg = test::error_of([] { parse_patched(GetParam().patch); });
  EXPECT_NE(msg.find(GetParam().message), std::string::npos) << "got: " << msg;
  EXPECT_NE(msg.find("config.json"), std::string::npos) << "got: " << msg;
}

INSTANTIATE_TEST_SUITE_P(
    Configs, HfConfigErrorTest,
    testing::Values(
        BadConfigCase{"YarnRope",
                      {{"rope_scaling", {{"rope_type", "yarn"}, {"factor", 4.0}}}},
                      "unsupported rope_scaling type 'yarn'"},
        BadConfigCase{"Mistral",
                      {{"architectures", {"MistralForCausalLM"}}, {"model_type", "mistral"}},
                      "unsupported architecture 'MistralForCausalLM'"},
        BadConfigCase{"MissingHiddenSize", {{"hidden_size", nullptr}}, "missing 'hidden_size'"},
        BadConfigCase{"StringHiddenSize",
                      {{"hidden_size", "big"}},
                      "'hidden_size' is not a 32-bit integer: \"big\""},
        // Integers past an int were wrapped (4294967304 read as 8); a model_type that is no
        // string escaped as a JSON type error.
        BadConfigCase{"HiddenSizeBeyondInt",
                      {{"hidden_size", 4294967304}},
                      "'hidden_size' is not a 32-bit integer: 4294967304"},
        BadConfigCase{"EosBeyondInt",
                      {{"eos_token_id", {2, 4294967298}}},
                      "'eos_token_id' is not a 32-bit integer: 4294967298"},
        BadConfigCase{"ModelTypeNotString",
                      {{"architectures", nullptr}, {"model_type", 5}},
                      "unsupported architecture 'unknown'"},
        BadConfigCase{"HeadsNotMultipleOfKvHeads",
                      {{"num_attention_heads", 4}, {"num_key_value_heads", 3}},
                      "num_attention_heads (4) is not a multiple of num_key_value_heads (3)"},
        BadConfigCase{"HiddenNotMultipleOfHeads",
                      {{"hidden_size", 30}},
                      "hidden_size 30 is not a multiple of num_attention_heads"},
        BadConfigCase{"ZeroVocab", {{"vocab_size", 0}}, "vocab_size must be positive"},
        BadConfigCase{"EosOutsideVocab",
                      {{"eos_token_id", 99}},
                      "eos_token_id 99 is outside the vocabulary (16)"},
        BadConfigCase{"OddHeadDim", {{"head_dim", 7}}, "head_dim 7 is odd"},
        // Variants this model does not compute are refused, not run as plain Llama.
        BadConfigCase{"GeluMlp",
                      {{"hidden_act", "gelu"}},
                      "hidden_act 'gelu' is not served (the MLP is SiLU-gated)"},
        BadConfigCase{"AttentionBias",
                      {{"attention_bias", true}},
                      "attention_bias true is not served (projections have no bias)"},
        BadConfigCase{"MlpBias", {{"mlp_bias", true}}, "mlp_bias true is not served"}),
    [](const auto& info) { return info.param.name; });

TEST(HfConfig, InvalidJsonNamesTheFile) {
  test::TempDir dir;
  test::write_file(dir.file("config.json"), "{\"hidden_size\": ");
  const std::string msg = test::error_of([&] { parse_hf_config(dir.file("config.json")); });
  EXPECT_NE(msg.find("config.json: invalid JSON"), std::string::npos) << "got: " << msg;
}

TEST(ModelConfigCounts, ParameterCountOfTinyConfig) {
  ModelConfig c = test::tiny_config();
  // embed 16*32, per layer q 32*32 + k,v 2*16*32 + o 32*32 + mlp 3*32*64 + norms 2*32, final norm
  // 32, untied head 16*32.
  const int64_t layer = 32 * 32 + 2 * 16 * 32 + 32 * 32 + 3 * 32 * 64 + 2 * 32;
  EXPECT_EQ(c.parameter_count(), 16 * 32 + 2 * layer + 32 + 16 * 32);
  c.tie_word_embeddings = true;
  EXPECT_EQ(c.parameter_count(), 16 * 32 + 2 * layer + 32);
}

}  // namespace
}  // namespace nanoinfer
