"""HF apply_chat_template(continue_final_message=True) renders of the three recognised chat
templates (Llama-3, Llama-3.1-Instruct, SmolLM2), for src/tokenizer/chat_template.cpp's
render_chat_continuing: conversations whose final message is begun for the model to go on with,
its content with and without surrounding whitespace (the Llama templates trim contents, SmolLM2's
does not), empty or all whitespace, and a final user or tool message. Writes
tests/data/tokenizer/chat_continue.json.

Usage: /opt/golden/bin/python tools/golden/chat_continue_golden.py
"""
import os
import sys

from transformers import AutoTokenizer, PreTrainedTokenizerFast

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tokenizer_golden import OUT, write_json  # noqa: E402

ENDINGS = ["Sure, the answer is", "  Step 1: ", "Line one\nline two \n", "", "   ", "x\u3000",
           "{\"name\": \"", "caf\u00e9 \u2014"]


def conversations():
    out = []
    for i, end in enumerate(ENDINGS):
        head = [{"role": "user", "content": "Answer briefly."}]
        if i % 2:
            head = [{"role": "system", "content": " Be terse. "}] + head
        out.append((f"assistant_{i}", head + [{"role": "assistant", "content": end}]))
    out.append(("user_last", [{"role": "user", "content": "  Finish this: once upon "}]))
    out.append(("tool_last", [{"role": "user", "content": "6 x 7?"},
                              {"role": "tool", "content": "42"}]))
    return out


def tokenizers():
    yield "llama3", AutoTokenizer.from_pretrained(os.path.join(OUT, "llama3"))
    yield "smollm2", AutoTokenizer.from_pretrained(os.path.join(OUT, "smollm2"))
    with open(os.path.join(OUT, "llama31_chat_template.jinja"), encoding="utf-8") as f:
        template = f.read()
    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(OUT, "llama3", "tokenizer.json"),
                                  bos_token="<|begin_of_text|>", eos_token="<|eot_id|>")
    tok.chat_template = template
    yield "llama31", tok


def main():
    cases = []
    for model, tok in tokenizers():
        for name, msgs in conversations():
            text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=False,
                                           continue_final_message=True)
            cases.append({"template": model, "name": name, "messages": msgs, "text": text})
    write_json(os.path.join(OUT, "chat_continue.json"), {"cases": cases})
    print(f"wrote {len(cases)} cases")


if __name__ == "__main__":
    main()
