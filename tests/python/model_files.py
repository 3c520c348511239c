"""Files the Python tests make models from: the config of a small Llama shape with SmolLM2's
vocabulary (random weights), and a Llama-3.2 tokenizer directory (Llama-3's tokenizer.json with
Llama-3.2's chat template). Shared by tests/python and tests/gpu."""
import json
import os
import shutil

SMALL_CONFIG = dict(
    architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=64,
    intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, vocab_size=49152, max_position_embeddings=512,
    rms_norm_eps=1e-5, rope_theta=10000.0, bos_token_id=1, eos_token_id=2,
    tie_word_embeddings=False,
)


def write_config(directory, **changes):
    """SMALL_CONFIG with `changes` as directory/config.json; returns its path."""
    path = os.path.join(directory, "config.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(dict(SMALL_CONFIG, **changes), f)
    return path


def write_llama32_tokenizer(directory, data):
    """Llama-3's tokenizer.json and Llama-3.2's chat template (from the test data in `data`)."""
    shutil.copy(os.path.join(data, "tokenizer", "llama3", "tokenizer.json"), directory)
    with open(os.path.join(data, "tokenizer", "llama32_chat_template.jinja")) as f:
        template = f.read()
    with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
        json.dump({"chat_template": template, "bos_token": "<|begin_of_text|>"}, f)
