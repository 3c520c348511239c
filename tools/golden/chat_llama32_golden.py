"""HF apply_chat_template renders of Llama-3.2-Instruct's chat template, and of the Llama-3.1 and
3.2 templates given a date_string, for src/tokenizer/chat_template.cpp. The 3.2 text is
tests/data/tokenizer/llama32_chat_template.jinja: the chat_template of
meta-llama/Llama-3.2-3B-Instruct's tokenizer_config.json as llama.cpp keeps it
(models/templates/meta-llama-Llama-3.2-3B-Instruct.jinja, vendored in the PyPI sdist
llama_cpp_python 0.3.36, whose Llama-3.1-8B-Instruct copy is byte for byte
llama31_chat_template.jinja). Its date is strftime_now("%d %b %Y"), today's, unless the caller
gives date_string; these renders all give one, and the C++ test checks the undated render against
today's date. Writes tests/data/tokenizer/chat_llama32.json.

Usage: PYTHON tools/golden/chat_llama32_golden.py   (a python with transformers)
"""
import os
import sys

from transformers import PreTrainedTokenizerFast

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tokenizer_golden import OUT, conversations, write_json  # noqa: E402

DATES = ["02 Mar 2025", "31 Dec 1999"]


def tokenizer(version):
    with open(os.path.join(OUT, f"llama{version}_chat_template.jinja"), encoding="utf-8") as f:
        template = f.read()
    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(OUT, "llama3", "tokenizer.json"),
                                  bos_token="<|begin_of_text|>", eos_token="<|eot_id|>")
    tok.chat_template = template
    return tok


def main():
    convs = conversations() + [("tool_result", [
        {"role": "user", "content": "What is 6 x 7?"},
        {"role": "assistant", "content": "Let me compute it."},
        {"role": "tool", "content": "42 \"exactly\"\n"},
    ]), ("assistant_last", [
        {"role": "system", "content": " Be terse. "},
        {"role": "user", "content": "Answer briefly."},
        {"role": "assistant", "content": "  Step 1: "},
    ])]
    cases = []
    for template in ("32", "31"):
        tok = tokenizer(template)
        for i, (name, msgs) in enumerate(convs):
            date = DATES[i % len(DATES)]
            modes = [(True, False), (False, False)]
            if msgs[-1]["role"] == "assistant":
                modes.append((False, True))
            for gen, go_on in modes:
                text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen,
                                               continue_final_message=go_on, date_string=date)
                cases.append({"template": "llama" + template, "name": name, "messages": msgs,
                              "add_generation_prompt": gen, "continue_final_message": go_on,
                              "date_string": date, "text": text})
    write_json(os.path.join(OUT, "chat_llama32.json"), {"cases": cases})
    print(f"wrote {len(cases)} cases; first:\n{cases[0]['text']!r}")


if __name__ == "__main__":
    main()
