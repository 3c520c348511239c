// Malformed checkpoints: each case writes one broken GGUF file or HF directory and checks that
// load_model throws an Error whose message names the problem and the file at fault.
#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <set>
#include <string>
#include <tuple>

#include "loader/model_loader.h"
#include "loader_fixtures.h"

namespace nanoinfer {
namespace {

using nlohmann::json;
using test::GgufWriter;
using test::TempDir;

struct BadCase {
  std::string name;
  // Writes the broken checkpoint into the directory and returns the path to load.
  std::function<std::string(const TempDir&)> write;
  std::string message;  // a substring the error must contain
  std::string file;     // the file (or directory) name the error must contain
};
void PrintTo(const BadCase& c, std::ostream* os) {
  *os << c.name;
}

std::string gguf(const TempDir& dir, const std::string& bytes) {
  test::write_file(dir.file("model.gguf"), bytes);
  return dir.file("model.gguf");
}

// A tiny GGUF with one change applied to its writer.
std::string gguf_with(const TempDir& dir, const std::function<void(GgufWriter&)>& edit,
                      const std::string& skip = "") {
  GgufWriter w = test::tiny_gguf(skip);
  edit(w);
  return gguf(dir, w.bytes());
}

// A tiny HF directory with optional edits of the config and of the tensor list / header.
std::string hf_dir(const TempDir& dir,
                   const std::function<void(std::vector<test::StTensor>&)>& edit_tensors = {},
                   const std::function<void(json&)>& edit_header = {},
                   const std::function<void(json&)>& edit_config = {}) {
  json config = test::tiny_config_json();
  if (edit_config) edit_config(config);
  test::write_file(dir.file("config.json"), config.dump());
  auto tensors = test::tiny_st_tensors();
  if (edit_tensors) edit_tensors(tensors);
  test::write_file(dir.file("model.safetensors"), test::safetensors_bytes(tensors, edit_header));
  return dir.str();
}

void erase_tensor(std::vector<test::StTensor>& ts, const std::string& name) {
  std::erase_if(ts, [&](const test::StTensor& t) { return t.name == name; });
}

// An index over two shards; `edit` may break the shards after they are split.
std::string sharded(const TempDir& dir,
                    const std::function<void(std::vector<test::StTensor>&, json&)>& edit) {
  test::write_file(dir.file("config.json"), test::tiny_config_json().dump());
  auto tensors = test::tiny_st_tensors();
  json index = {{"weight_map", json::object()}};
  std::vector<test::StTensor> a(tensors.begin(), tensors.begin() + 5);
  std::vector<test::StTensor> b(tensors.begin() + 5, tensors.end());
  for (const auto& t : a) index["weight_map"][t.name] = "model-00001-of-00002.safetensors";
  for (const auto& t : b) index["weight_map"][t.name] = "model-00002-of-00002.safetensors";
  edit(b, index);
  test::write_file(dir.file("model-00001-of-00002.safetensors"), test::safetensors_bytes(a));
  test::write_file(dir.file("model-00002-of-00002.safetensors"), test::safetensors_bytes(b));
  test::write_file(dir.file("model.safetensors.index.json"), index.dump());
  return dir.str();
}

std::vector<BadCase> bad_cases() {
  const std::string kLastGguf = "blk.1.ffn_norm.weight";  // the last tensor tiny_gguf writes
  return {
      // GGUF header and directory
      {"GgufBadMagic", [](const TempDir& d) { return gguf(d, "GGUX" + std::string(60, '\0')); },
       "not a GGUF file (bad magic", "model.gguf"},
      {"GgufVersion4",
       [](const TempDir& d) {
         std::string b = test::tiny_gguf().bytes();
         b[4] = 4;
         return gguf(d, b);
       },
       "unsupported GGUF version 4", "model.gguf"},
      {"GgufTruncatedHeader",
       [](const TempDir& d) { return gguf(d, test::tiny_gguf().bytes().substr(0, 100)); },
       "truncated GGUF file", "model.gguf"},
      {"GgufTruncatedString",
       [](const TempDir& d) {
         GgufWriter w;
         std::string v;
         test::put<uint64_t>(v, 1'000'000);  // a string length with nothing behind it
         w.kv_raw("general.name", GgufWriter::kString, v + "abc");
         return gguf(d, w.bytes());
       },
       "truncated GGUF file: value of metadata key 'general.name'", "model.gguf"},
      {"GgufTruncatedArray",
       [](const TempDir& d) {
         GgufWriter w;
         std::string v;
         test::put<uint32_t>(v, GgufWriter::kU32);
         test::put<uint64_t>(v, uint64_t{1} << 60);
         w.kv_raw("tokenizer.ggml.token_type", GgufWriter::kArray, v);
         return gguf(d, w.bytes());
       },
       "truncated GGUF file: array 'tokenizer.ggml.token_type'", "model.gguf"},
      {"GgufUnknownValueType",
       [](const TempDir& d) {
         GgufWriter w;
         w.kv_raw("x", 77, "");
         return gguf(d, w.bytes());
       },
       "metadata key 'x' has unknown value type 77", "model.gguf"},
      {"GgufDataTruncated",
       [](const TempDir& d) {
         const std::string b = test::tiny_gguf().bytes();
         return gguf(d, b.substr(0, b.size() - 8));
       },
       "tensor '" + kLastGguf + "' data", "model.gguf"},
      {"GgufOffsetPastEnd",
       [](const TempDir& d) {
         return gguf_with(d, [](GgufWriter& w) {
           w.tensor("blk.0.attn_q.bias", 0, {4}, "", uint64_t{1} << 40);
         });
       },
       "tensor 'blk.0.attn_q.bias' data (offset 1099511627776", "model.gguf"},
      {"GgufMisalignedOffset",
       [](const TempDir& d) {
         return gguf_with(d, [](GgufWriter& w) { w.tensor("blk.0.attn_q.bias", 0, {1}, "", 3); });
       },
       "tensor 'blk.0.attn_q.bias' data offset 3 is not aligned to 32", "model.gguf"},
      {"GgufUnknownGgmlType",
       [](const TempDir& d) {
         return gguf_with(d, [](GgufWriter& w) { w.tensor("blk.0.attn_q.bias", 99, {4}, ""); });
       },
       "tensor 'blk.0.attn_q.bias' has unknown ggml type 99", "model.gguf"},
      {"GgufZeroDimension",
       [](const TempDir& d) {
         return gguf_with(d, [](GgufWriter& w) { w.tensor("blk.0.attn_q.bias", 0, {0, 4}, ""); });
       },
       "tensor 'blk.0.attn_q.bias' has a bad dimension 0", "model.gguf"},
      {"GgufQuantRowNotWholeBlocks",
       [](const TempDir& d) {
         return gguf_with(d, [](GgufWriter& w) {
           w.tensor("blk.0.attn_q.bias", 8, {33}, std::string(68, '\0'));
         });
       },
       "rows of 33 values, not a multiple of the block size 32", "model.gguf"},
      // GGUF model contents
      {"GgufUnsupportedArchitecture",
       [](const TempDir& d) {
         GgufWriter w;
         w.kv_string("general.architecture", "gemma");
         return gguf(d, w.bytes());
       },
       "unsupported architecture 'gemma'", "model.gguf"},
      {"GgufUnsupportedQuantType",
       [](const TempDir& d) {
         return gguf_with(
             d,
             [](GgufWriter& w) {
               w.tensor("blk.0.ffn_up.weight", 9, {64, 32}, std::string(64 * 36, '\0'));
             },
             "blk.0.ffn_up.weight");
       },
       "tensor 'blk.0.ffn_up.weight' has ggml type Q8_1, which nanoinfer cannot read "
       "(supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL, Q2_K, Q3_K, Q4_K, "
       "Q5_K, Q6_K, IQ4_XS)",
       "model.gguf"},
      {"GgufKQuantRowsNotWholeBlocks",
       [](const TempDir& d) {
         return gguf_with(
             d,
             [](GgufWriter& w) {
               w.tensor("blk.0.ffn_up.weight", 12, {64, 32},
                        std::string(64 * 32 / 256 * 144, '\0'));
             },
             "blk.0.ffn_up.weight");
       },
       "of type Q4_K has rows of 32 values, not a multiple of the block size 256", "model.gguf"},
      {"GgufMissingTensor",
       [](const TempDir& d) {
         return gguf_with(
             d, [](GgufWriter&) {}, "blk.1.attn_v.weight");
       },
       "missing tensor 'model.layers.1.self_attn.v_proj.weight'", "model.gguf"},
      {"GgufLayerCountBeyondTensors",  // refused before 2.9 million names are listed
       [](const TempDir& d) {
         ModelConfig c = test::tiny_config();
         c.num_layers = 327681;
         GgufWriter w;
         test::add_tiny_gguf_metadata(w, c);
         return gguf(d, w.bytes());
       },
       "the config's 327681 layers need 2949131 tensors; the checkpoint holds 0", "model.gguf"},
      {"GgufBlockCountBeyondInt32",  // was read as 2
       [](const TempDir& d) {
         GgufWriter w;  // the keys read before it, then the count
         w.kv_string("general.architecture", "llama");
         w.kv_u32("llama.context_length", 64);
         w.kv_u32("llama.embedding_length", 32);
         std::string v;
         test::put<uint64_t>(v, (uint64_t{1} << 32) + 2);
         w.kv_raw("llama.block_count", GgufWriter::kU64, v);
         return gguf(d, w.bytes());
       },
       "metadata llama.block_count = 4294967298 does not fit an int32", "model.gguf"},
      {"GgufDuplicateKey",
       [](const TempDir& d) {
         return gguf_with(d, [](GgufWriter& w) { w.kv_u32("llama.block_count", 3); });
       },
       "metadata key 'llama.block_count' appears twice", "model.gguf"},
      {"GgufExtraTensor",
       [](const TempDir& d) {
         return gguf_with(d, [](GgufWriter& w) {
           w.tensor("blk.0.attn_q.bias", 0, {32}, std::string(128, '\0'));
         });
       },
       "unexpected tensor 'blk.0.attn_q.bias'", "model.gguf"},
      {"GgufWrongShape",
       [](const TempDir& d) {
         return gguf_with(
             d,
             [](GgufWriter& w) {
               w.tensor("blk.0.ffn_up.weight", 0, {63, 32}, std::string(63 * 32 * 4, '\0'));
             },
             "blk.0.ffn_up.weight");
       },
       "tensor 'model.layers.0.mlp.up_proj.weight' ('blk.0.ffn_up.weight' in the file) has shape "
       "[63, 32], expected [64, 32]",
       "model.gguf"},
      {"GgufRopeFreqsWrongLength",
       [](const TempDir& d) {
         return gguf_with(d, [](GgufWriter& w) {
           w.tensor("rope_freqs.weight", 0, {3}, test::f32_bytes({1.0F, 1.0F, 8.0F}));
         });
       },
       "rope_freqs.weight has 3 values, expected head_dim / 2 = 4", "model.gguf"},
      {"GgufRopeFreqsNotPositive",
       [](const TempDir& d) {
         return gguf_with(d, [](GgufWriter& w) {
           w.tensor("rope_freqs.weight", 0, {4}, test::f32_bytes({1.0F, 1.0F, 0.0F, 8.0F}));
         });
       },
       "rope_freqs.weight[2] is 0.000000; RoPE frequency factors must be positive and finite",
       "model.gguf"},
      {"GgufRopeFreqsAndScalingType",
       [](const TempDir& d) {
         return gguf_with(d, [](GgufWriter& w) {
           w.kv_string("llama.rope.scaling.type", "linear");
           w.kv_f32("llama.rope.scaling.factor", 2.0F);
           w.tensor("rope_freqs.weight", 0, {4}, test::f32_bytes({1.0F, 1.0F, 2.0F, 8.0F}));
         });
       },
       "both llama.rope.scaling.type 'linear' and tensor 'rope_freqs.weight'", "model.gguf"},
      // safetensors files
      {"SafetensorsTruncated",
       [](const TempDir& d) {
         hf_dir(d);
         test::write_file(d.file("model.safetensors"), "abcd");
         return d.str();
       },
       "truncated safetensors file: 4 bytes", "model.safetensors"},
      {"SafetensorsHeaderPastEnd",
       [](const TempDir& d) {
         hf_dir(d);
         std::string b;
         test::put<uint64_t>(b, 1'000'000);
         test::write_file(d.file("model.safetensors"), b + "{}");
         return d.str();
       },
       "header length 1000000 runs past the end of the file", "model.safetensors"},
      {"SafetensorsBadJson",
       [](const TempDir& d) {
         hf_dir(d);
         std::string b;
         test::put<uint64_t>(b, 4);
         test::write_file(d.file("model.safetensors"), b + "{\"a\"");
         return d.str();
       },
       "invalid safetensors JSON header", "model.safetensors"},
      {"SafetensorsOffsetsPastEnd",
       [](const TempDir& d) {
         return hf_dir(d, {}, [](json& h) {
           h["model.norm.weight"]["data_offsets"] = {0, uint64_t{1} << 30};
         });
       },
       "tensor 'model.norm.weight' data_offsets [0, 1073741824] run past the end of the data",
       "model.safetensors"},
      {"SafetensorsSizeMismatch",
       [](const TempDir& d) {
         return hf_dir(d, {}, [](json& h) { h["model.norm.weight"]["shape"] = {2, 2}; });
       },
       "tensor 'model.norm.weight' has 128 bytes but shape [2,2] of f32 needs 16",
       "model.safetensors"},
      {"SafetensorsUnknownDtype",
       [](const TempDir& d) {
         return hf_dir(d, [](auto& ts) {
           ts.push_back({"model.layers.0.mlp.scale", "I64", {2}, std::string(16, '\0')});
         });
       },
       "tensor 'model.layers.0.mlp.scale' has unsupported dtype I64", "model.safetensors"},
      // HF checkpoint contents
      {"HfMissingTensor",
       [](const TempDir& d) {
         return hf_dir(d,
                       [](auto& ts) { erase_tensor(ts, "model.layers.0.mlp.down_proj.weight"); });
       },
       "missing tensor 'model.layers.0.mlp.down_proj.weight'", "nanoinfer-test"},
      {"HfLayerCountBeyondTensors",
       [](const TempDir& d) {
         return hf_dir(d, {}, {}, [](json& c) { c["num_hidden_layers"] = 327681; });
       },
       "the config's 327681 layers need 2949132 tensors; the checkpoint holds 21",
       "nanoinfer-test"},
      {"HfExtraTensor",
       [](const TempDir& d) {
         return hf_dir(d, [](auto& ts) {
           ts.push_back(
               {"model.layers.0.self_attn.q_proj.bias", "F32", {32}, std::string(128, '\0')});
         });
       },
       "unexpected tensor 'model.layers.0.self_attn.q_proj.bias'", "model.safetensors"},
      {"HfWrongShape",
       [](const TempDir& d) {
         return hf_dir(d, [](auto& ts) {
           erase_tensor(ts, "model.norm.weight");
           ts.push_back({"model.norm.weight", "F32", {31}, std::string(124, '\0')});
         });
       },
       "tensor 'model.norm.weight' has shape [31], expected [32]", "model.safetensors"},
      {"HfUnsupportedArchitecture",
       [](const TempDir& d) {
         return hf_dir(d, {}, {}, [](json& c) {
           c["architectures"] = {"Qwen2ForCausalLM"};
           c["model_type"] = "qwen2";
         });
       },
       "unsupported architecture 'Qwen2ForCausalLM'", "config.json"},
      {"HfNoConfig", [](const TempDir& d) { return d.str(); }, "no config.json", "nanoinfer-test"},
      {"HfNoWeights",
       [](const TempDir& d) {
         test::write_file(d.file("config.json"), test::tiny_config_json().dump());
         return d.str();
       },
       "no model.safetensors or model.safetensors.index.json", "nanoinfer-test"},
      {"ShardMissingListedTensor",
       [](const TempDir& d) { return sharded(d, [](auto& b, json&) { b.pop_back(); }); },
       "(listed in model.safetensors.index.json)", "model-00002-of-00002.safetensors"},
      {"ShardDuplicateTensor",
       [](const TempDir& d) {
         return sharded(d, [](auto& b, json& index) {
           b.push_back(test::tiny_st_tensors().front());
           index["weight_map"][b.back().name] = "model-00002-of-00002.safetensors";
         });
       },
       "also appears in", "model-0000"},
      {"ShardFileMissing",
       [](const TempDir& d) {
         return sharded(d, [](auto&, json& index) {
           index["weight_map"]["model.norm.weight"] = "model-00003-of-00003.safetensors";
         });
       },
       "cannot open", "model-00003-of-00003.safetensors"},
      {"ShardIndexNotJson",
       [](const TempDir& d) {
         sharded(d, [](auto&, json&) {});
         test::write_file(d.file("model.safetensors.index.json"), "{\"weight_map\": {");
         return d.str();
       },
       "invalid JSON", "model.safetensors.index.json"},
      {"ConfigIsADirectory",
       [](const TempDir& d) {
         hf_dir(d);
         std::filesystem::remove(d.file("config.json"));
         std::filesystem::create_directory(d.file("config.json"));
         return d.str();
       },
       "cannot open (a directory)", "config.json"},
      // paths
      {"NoSuchPath", [](const TempDir& d) { return d.file("absent.bin"); },
       "no such file or directory", "absent.bin"},
      {"NeitherDirNorGguf",
       [](const TempDir& d) {
         test::write_file(d.file("weights.bin"), "x");
         return d.file("weights.bin");
       },
       "not a HF checkpoint directory or a .gguf file", "weights.bin"},
  };
}

class LoaderErrorTest : public testing::TestWithParam<BadCase> {};

TEST_P(LoaderErrorTest, NamesProblemAndFile) {
  const TempDir dir;
  const std::string path = GetParam().write(dir);
  const std::string msg = test::error_of([&] { load_model(path); });
  ASSERT_FALSE(msg.empty()) << "no error for " << GetParam().name;
  EXPECT_NE(msg.find(GetParam().message), std::string::npos) << "got: " << msg;
  EXPECT_NE(msg.find(GetParam().file), std::string::npos) << "got: " << msg;
}

// load_model_config reads the config alone: a fault in it, in the GGUF's header or in the path is
// load_model's error word for word; one in the weights only load_model sees.
TEST_P(LoaderErrorTest, ConfigAloneFailsTheSameWay) {
  const TempDir dir;
  const std::string path = GetParam().write(dir);
  const std::string full = test::error_of([&] { load_model(path); });
  const std::string alone = test::error_of([&] { load_model_config(path); });
  const std::string& name = GetParam().name;
  static const std::set<std::string> kInWeights = {"GgufUnsupportedQuantType",
                                                   "GgufMissingTensor",
                                                   "GgufLayerCountBeyondTensors",
                                                   "GgufExtraTensor",
                                                   "GgufWrongShape",
                                                   "HfMissingTensor",
                                                   "HfLayerCountBeyondTensors",
                                                   "HfExtraTensor",
                                                   "HfWrongShape",
                                                   "HfNoWeights"};
  const bool in_weights =
      kInWeights.count(name) > 0 || name.starts_with("Safetensors") || name.starts_with("Shard");
  if (in_weights)
    EXPECT_EQ(alone, "") << "the config alone was refused";
  else
    EXPECT_EQ(alone, full);
}

// On a sound checkpoint it is load_model's config.
TEST(LoadModelConfig, IsLoadModelsConfig) {
  const TempDir g, h;
  for (const std::string& path : {gguf(g, test::tiny_gguf().bytes()), hf_dir(h)}) {
    const ModelConfig a = load_model_config(path), b = load_model(path).config;
    auto fields = [](const ModelConfig& c) {
      return std::tie(c.architecture, c.vocab_size, c.hidden_size, c.intermediate_size,
                      c.num_layers, c.num_heads, c.num_kv_heads, c.head_dim, c.rms_norm_eps,
                      c.rope_theta, c.rope_scaling.type, c.rope_scaling.freq_factors,
                      c.max_position_embeddings, c.tie_word_embeddings, c.bos_token_id,
                      c.eos_token_ids);
    };
    EXPECT_TRUE(fields(a) == fields(b)) << path;
    EXPECT_EQ(a.max_position_embeddings, test::tiny_config().max_position_embeddings) << path;
  }
}

INSTANTIATE_TEST_SUITE_P(Malformed, LoaderErrorTest, testing::ValuesIn(bad_cases()),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace nanoinfer
