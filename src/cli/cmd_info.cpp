// `nanoinfer info --model M`: config, parameter count, weight dtype and bytes.
#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>

#include "cli/commands.h"
#include "loader/model_loader.h"
#include "nanoinfer/engine.h"

namespace nanoinfer::cli {

namespace {
const char* rope_type(RopeScaling::Type t) {
  switch (t) {
    case RopeScaling::Type::None:
      return "default";
    case RopeScaling::Type::Linear:
      return "linear";
    case RopeScaling::Type::Llama3:
      return "llama3";
    case RopeScaling::Type::FreqFactors:
      return "per-frequency factors from rope_freqs, largest";
  }
  return "?";
}
}  // namespace

void add_info_command(CLI::App& app) {
  auto* cmd =
      app.add_subcommand("info", "Print a model's config, parameter count, dtype and bytes");
  auto model = std::make_shared<std::string>();
  cmd->add_option("--model", *model, "HF directory, .gguf file or 'default'")->required();
  cmd->callback([model] {
    const std::string path = resolve_model_path(*model);
    LoadOptions as_stored;  // nothing is dequantised to print a description
    as_stored.dequantize = false;
    const LoadedModel m = load_model(path, as_stored);
    const ModelConfig& c = m.config;
    std::string eos;
    for (int e : c.eos_token_ids) eos += (eos.empty() ? "" : ",") + std::to_string(e);
    std::printf("model:            %s\n", path.c_str());
    std::printf("architecture:     %s\n", c.architecture.c_str());
    std::printf("layers:           %d\n", c.num_layers);
    std::printf("hidden size:      %d\n", c.hidden_size);
    std::printf("intermediate:     %d\n", c.intermediate_size);
    std::printf("heads / kv heads: %d / %d (head dim %d)\n", c.num_heads, c.num_kv_heads,
                c.head_dim);
    std::printf("vocab:            %d\n", c.vocab_size);
    const auto& f = c.rope_scaling.freq_factors;
    const float factor =
        f.empty() ? c.rope_scaling.factor : *std::max_element(f.begin(), f.end());  // the largest
    std::printf("rope:             theta %g, scaling %s (factor %g)\n", c.rope_theta,
                rope_type(c.rope_scaling.type), factor);
    std::printf("max positions:    %d\n", c.max_position_embeddings);
    std::printf("tied embeddings:  %s\n", c.tie_word_embeddings ? "yes" : "no");
    std::printf("bos / eos:        %d / %s\n", c.bos_token_id, eos.c_str());
    std::printf("parameters:       %lld (%.1f M)\n", static_cast<long long>(c.parameter_count()),
                static_cast<double>(c.parameter_count()) / 1e6);
    std::printf("weights:          %s, %lld bytes of tensors in the file\n",
                m.weight_format.c_str(), static_cast<long long>(m.file_bytes));
  });
}

}  // namespace nanoinfer::cli
