"""Golden vectors for the C++ tokenizer, produced by HF `tokenizers` (and `transformers` for the
GGUF conversion and for chat templates).

Writes tests/data/tokenizer/:
  llama3/tokenizer.json (minified), llama3/tokenizer_config.json
  llama2/tokenizer.json, llama2/tokenizer_config.json
  smollm2/tokenizer.json, tokenizer_config.json (what transformers builds from the default GGUF)
  golden_<model>.json   per corpus string: ids with and without special tokens, decode of the
                        ids with and without skip_special_tokens
  chat_<model>.json     rendered chat templates and their ids

Usage: /opt/golden/bin/python tools/golden/tokenizer_golden.py [--gguf PATH]
"""

import argparse
import gzip
import json
import os
import shutil

from tokenizers import Tokenizer
from transformers import AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "data", "tokenizer")
SHARED = os.path.join(os.path.dirname(ROOT), "shared", "data", "tokenizers")
DEFAULT_GGUF = os.path.expanduser("~/.cache/nanoinfer/SmolLM2-135M-Instruct.Q4_1.gguf")

SPECIALS = ["<|begin_of_text|>", "<|eot_id|>", "<|im_start|>", "<|im_end|>", "<s>", "</s>",
            "<unk>", "<|endoftext|>"]

BASE = [
    "",
    " ",
    "  ",
    "\n",
    "\t",
    "Hello world",
    "Hello, world!",
    "hello world",
    " Hello world",
    "Hello world ",
    "  Hello   world  ",
    "The quick brown fox jumps over the lazy dog.",
    "It's a test: don't, won't, can't, I'm, you're, we've, they'll, he'd.",
    "IT'S LOUD: DON'T, I'M, YOU'RE, WE'VE, THEY'LL, HE'D.",
    "It'S mIxEd: dOn'T, yOu'Re, We'Ve, ThEy'Ll",
    "'s 't 're 've 'm 'll 'd",
    "'sfoo 'tbar 'rebaz",
    "Let's go! ''quoted'' and ‘curly’ it’s",
    "1",
    "12",
    "123",
    "1234",
    "12345678901234567890",
    "3.14159265358979323846",
    "Call 555-0123 or +1 (800) 555-0199 now",
    "1,000,000 and 2.5e10 and 0x1F",
    "year 2024: 365 days, 8760 hours",
    "٠١٢٣٤٥٦٧٨٩ and ०१२३ and ½ ¾ ² ³ Ⅻ",
    "def add(a, b):\n    return a + b\n",
    "int main() {\n\treturn 0;\n}\n",
    "for (int i = 0; i < n; ++i) { sum += x[i] * y[i]; }",
    "if x == 1:\n\tprint('one')\nelif x == 2:\n\tprint(\"two\")\n",
    "#include <vector>\n#include <string>\n",
    "SELECT * FROM users WHERE id = 42 AND name LIKE '%bob%';",
    "const f = (x) => x ** 2; // square",
    "    indented with four spaces",
    "trailing spaces    ",
    "a\n\nb\n\n\nc",
    "line1\r\nline2\r\n",
    "\r\n\r\n",
    " \n \n ",
    "tabs\t\tand\tspaces  \t mixed",
    "word\n    next",
    "end with newline\n",
    "\n\n\nleading newlines",
    "many      spaces      here",
    "https://www.example.com/path/to/page?query=1&b=two#frag",
    "Visit http://foo.bar/baz_qux-1.html or mailto:someone@example.org",
    "user@example.com, first.last+tag@sub.domain.co.uk",
    "C:\\Users\\name\\file.txt and /usr/local/bin",
    "日本語のテキストです。",
    "中文测试：你好，世界！",
    "한국어 문장입니다.",
    "Привет, мир! Как дела?",
    "Съешь же ещё этих мягких французских булок.",
    "مرحبا بالعالم",
    "السلام عليكم ورحمة الله",
    "नमस्ते दुनिया",
    "हिन्दी में लिखा गया वाक्य।",
    "Ελληνικά γράμματα",
    "שלום עולם",
    "ภาษาไทย",
    "Tiếng Việt có dấu",
    "Emoji: 😀😃😄 🎉",
    "👍🏽 👋🏿 🧑🏻‍💻",
    "👨‍👩‍👧‍👦 family",
    "🏳️‍🌈 flag and 🇯🇵 🇺🇸",
    "❤️ heart ✨ sparkles",
    "e\u0301 combining acute",
    "cafe\u0301 vs café",
    "a\u0300\u0301\u0302\u0303 stacked marks",
    "Z\u0351\u0352\u0353a\u0354\u0355l\u0356g\u0357o",
    "non\u00a0breaking\u00a0space",
    "zero\u200bwidth\u200bspace",
    "joiner\u200dand\u200cnon-joiner",
    "\ufeffBOM at start",
    "em\u2003space and thin\u2009space",
    "ideographic\u3000space",
    "soft\u00adhyphen",
    "line\u2028separator",
    "ﬁ ligature and ℌ and ①",
    "ſtreet 'ſ long s",
    "Mixed: English, русский, 中文, العربية, हिन्दी.",
    "price: $100.00 (€85,50) ¥1000 £20",
    "100% sure & 50/50 chance",
    "!!!???...",
    "...hmm",
    "---",
    "a-b_c.d",
    "@user #hashtag $var %mod ^xor &and *ptr",
    "\"double\" 'single' `back`",
    "[brackets] {braces} (parens) <angles>",
    "x=1;y=2;z=x+y",
    "snake_case camelCase PascalCase kebab-case",
    "HTTPServerError XMLHttpRequest",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "abababababababababababab",
    "Supercalifragilisticexpialidocious",
    "Pneumonoultramicroscopicsilicovolcanoconiosis",
    "antidisestablishmentarianism",
    "The year was 1984.",
    "I have 3 apples and 42 oranges.",
    "Mr. Smith's car isn't here; Ms. O'Neil's is.",
    "rock 'n' roll",
    "She said, \"I'll be there at 5 o'clock.\"",
    "A\tB\tC\n1\t2\t3",
    "   ",
    "\t\t\t",
    "\n\n",
    " a",
    "a ",
    " 1",
    " !",
    "!",
    "a",
    "A",
    "Ω",
    "é",
    "中",
    "😀",
    "\u0000nul byte",
    "bell\u0007 and escape\u001b[0m",
    "\u001c\u001d\u001e\u001f unit separators",
    "Math: ∑ᵢ xᵢ² ≤ ∞, ∀x∈ℝ",
    "Arrows → ← ↑ ↓ ⇒",
    "Box ┌─┐ │ │ └─┘",
    "Chess ♔♕♖ cards ♠♥♦♣",
    "Music 𝄞 and math 𝔸𝔹ℂ",
    "Old italic 𐌀𐌁𐌂",
    "tokenization is fun",
    "The the THE tHe",
    "don't DON'T Don'T",
    "we'll WE'LL",
    "I'd I'D",
    "you've YOU'VE",
    "I'm I'M",
    "they're THEY'RE",
    "x's X'S",
    "it's   it's",
    "'",
    "''",
    "'s",
    "a'b'c",
    "Newline before punct\n!",
    "space before newline \nnext",
    "spaces then newline   \n  next",
    "punct then newlines!!\n\n\nok",
    "text\n\n  \n\nmore",
    "\u00a0\u00a0leading nbsp",
    "trailing nbsp\u00a0",
    "λx.x + λy.y",
    "ÀÉÎÕÜ àéîõü ÇçÑñ",
    "Straße, Größe, Maß",
    "İstanbul ıi",
    "ǅemal Ǆ ǆ",
    "Ꭰ Cherokee ꭰ",
]

# Longer English text: repeated and varied so the cache and long words are exercised.
PROSE = (
    "In the beginning of the project, the engineers wrote a tokenizer from scratch. They tested "
    "it against the reference, string by string, until every id matched. Then they measured its "
    "speed, and found it fast enough; the rest of the engine could now rely on it.\n\n"
)


def build_corpus():
    corpus = list(BASE)
    for sp in SPECIALS:
        corpus.append(f"{sp}Hello")
        corpus.append(f"Hello {sp} world")
        corpus.append(f"a{sp}{sp}b")
        corpus.append(f"{sp}")
    corpus.append("<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>")
    corpus.append("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    corpus.append("<s>[INST] hi [/INST] hello</s>")
    corpus.append("<|eot_id|<|im_start|<s")
    corpus.append("< s > <|im_start |>")
    for s in ["Hello world", "日本語", "1234", "it's", "😀"]:
        corpus.append(" " + s)
        corpus.append("  " + s)
        corpus.append(s + "  ")
        corpus.append("\n" + s + "\n")
    # Letters and digits added to Unicode after 14.0 (CJK Extension H, U+A7CB, outlined digits):
    # classed as symbols by Unicode 14.0 tables, they moved the pre-token boundaries.
    corpus += ["\U00031350's", "\ua7cb's", "\U00031350.a", "x\U0001ccf1234", "\U0001ccf6's",
               "\U0001e5d0\U0001e5d1 \u1c89'll \U0002ebf0 ok"]
    corpus.append(PROSE * 3)
    corpus.append("9" * 100)
    corpus.append(" " * 50 + "x")
    corpus.append("\n" * 20)
    corpus.append("ab " * 200)
    corpus.append("".join(chr(c) for c in range(0x20, 0x7F)))
    corpus.append("".join(chr(c) for c in range(0xA0, 0x180)))
    seen = set()
    unique = []
    for s in corpus:
        if s not in seen:
            seen.add(s)
            unique.append(s)
    return unique


def golden_for(tok, corpus):
    cases = []
    for text in corpus:
        with_special = tok.encode(text, add_special_tokens=True).ids
        without = tok.encode(text, add_special_tokens=False).ids
        cases.append({
            "text": text,
            "ids": with_special,
            "ids_no_special": without,
            "decode": tok.decode(with_special, skip_special_tokens=False),
            "decode_skip_special": tok.decode(with_special, skip_special_tokens=True),
        })
    return cases


def conversations():
    sys_msg = {"role": "system", "content": "You are a terse assistant. \n"}
    turns = [
        ("What is 2+2?", "4."),
        ("  And in Russian?  ", "Четыре."),
        ("Write a haiku\nabout rain.", "Drops on the window\nsoft drums\n"),
        ("Say 'hi' 😀", "hi 😀"),
        ("Last one: <|eot_id|> stays text?", "Yes."),
    ]
    out = []
    for n in (1, 2, 5):
        msgs = []
        for i in range(n):
            msgs.append({"role": "user", "content": turns[i][0]})
            if i + 1 < n:
                msgs.append({"role": "assistant", "content": turns[i][1]})
        out.append((f"{n}_turn_system", [sys_msg] + msgs))
        out.append((f"{n}_turn_no_system", msgs))
    return out


def chat_golden(hf_tok):
    cases = []
    for name, msgs in conversations():
        for gen in (True, False):
            text = hf_tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)
            ids = hf_tok.backend_tokenizer.encode(text, add_special_tokens=False).ids
            cases.append({"name": name, "messages": msgs, "add_generation_prompt": gen,
                          "text": text, "ids": ids})
    return cases


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=0)
        f.write("\n")


def write_minified(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, separators=(",", ":"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", default=DEFAULT_GGUF)
    args = ap.parse_args()
    corpus = build_corpus()
    print(f"corpus: {len(corpus)} strings")

    for name in ("llama3", "llama2"):
        os.makedirs(os.path.join(OUT, name), exist_ok=True)
    with gzip.open(os.path.join(SHARED, "llama3", "tokenizer.json.gz"), "rt", encoding="utf-8") as f:
        write_minified(os.path.join(OUT, "llama3", "tokenizer.json"), json.load(f))
    shutil.copy(os.path.join(SHARED, "llama3", "tokenizer_config.json"),
                os.path.join(OUT, "llama3", "tokenizer_config.json"))
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(SHARED, "llama2", f), os.path.join(OUT, "llama2", f))

    smol = AutoTokenizer.from_pretrained(os.path.dirname(args.gguf),
                                         gguf_file=os.path.basename(args.gguf))
    os.makedirs(os.path.join(OUT, "smollm2"), exist_ok=True)
    write_minified(os.path.join(OUT, "smollm2", "tokenizer.json"),
                   json.loads(smol.backend_tokenizer.to_str()))
    write_json(os.path.join(OUT, "smollm2", "tokenizer_config.json"),
               {"bos_token": smol.bos_token, "eos_token": smol.eos_token,
                "chat_template": smol.chat_template})

    toks = {
        "llama3": Tokenizer.from_file(os.path.join(OUT, "llama3", "tokenizer.json")),
        "llama2": Tokenizer.from_file(os.path.join(OUT, "llama2", "tokenizer.json")),
        "smollm2": smol.backend_tokenizer,
    }
    for name, tok in toks.items():
        write_json(os.path.join(OUT, f"golden_{name}.json"),
                   {"model": name, "cases": golden_for(tok, corpus)})

    llama3_hf = AutoTokenizer.from_pretrained(os.path.join(OUT, "llama3"))
    write_json(os.path.join(OUT, "chat_llama3.json"), {"cases": chat_golden(llama3_hf)})
    write_json(os.path.join(OUT, "chat_smollm2.json"), {"cases": chat_golden(smol)})

    # transformers' own tokenizer classes must agree with the raw tokenizers we compare against.
    for name, hf in (("llama3", llama3_hf),
                     ("llama2", AutoTokenizer.from_pretrained(os.path.join(OUT, "llama2"))),
                     ("smollm2", smol)):
        bad = [s for s in corpus if hf(s).input_ids != toks[name].encode(s).ids]
        print(f"{name}: transformers and tokenizers disagree on {len(bad)} strings")


if __name__ == "__main__":
    main()
