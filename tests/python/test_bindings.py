"""The Python module against HF transformers' tokens (the committed reference vectors) and the
engine's own behaviour: batches, streams, sampling parameters, the tokenizer and the errors.

Run by ctest with PYTHONPATH at the build's python/ folder and NI_TEST_DATA at tests/data. Cases
on the default model skip when it is not fetched, or fail where NANOINFER_REQUIRE_MODEL is set.
"""

import _thread
import copy
import json
import math
import os
import pathlib
import pickle
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import warnings

import model_files  # (beside this file)
import nanoinfer

DATA = os.environ.get("NI_TEST_DATA", os.path.join(os.path.dirname(__file__), "..", "data"))


def read_json(relative):
    with open(os.path.join(DATA, relative), encoding="utf-8") as f:
        return json.load(f)


def tiny(name="gqa"):
    return os.path.join(DATA, "models", name)


def long_tiny(**options):
    """The tiny model's shape with random weights and room for 8,000 tokens (seconds of steps)."""
    with open(os.path.join(tiny(), "config.json"), encoding="utf-8") as f:
        config = dict(json.load(f), max_position_embeddings=8192)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "config.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(config, f)
        return nanoinfer.Engine("", random_weights=True, config=path, max_context=8192, **options)


class TinyModel(unittest.TestCase):
    """A random-weight checkpoint without tokenizer (fp32 CPU): prompts are token ids."""

    @classmethod
    def setUpClass(cls):
        cls.engine = nanoinfer.Engine(tiny())
        cls.ref = read_json("models/gqa/reference.json")

    def greedy_params(self, case):
        return nanoinfer.SamplingParams(max_new_tokens=len(case["greedy_ids"]), ignore_eos=True)

    def test_batch_of_prompts_gives_hf_greedy_tokens(self):
        cases = self.ref["cases"]
        outs = self.engine.generate(
            [c["prompt_ids"] for c in cases], params=[self.greedy_params(c) for c in cases]
        )
        self.assertEqual(len(outs), len(cases))
        for out, c in zip(outs, cases):
            self.assertEqual(out.token_ids, c["greedy_ids"], c["name"])
            self.assertEqual(out.finish_reason, "length")
            self.assertEqual(out.text, "")  # no tokenizer, no text
        stats = self.engine.last_stats
        self.assertEqual(stats["prefill_tokens"], sum(len(c["prompt_ids"]) for c in cases))
        # One prompt of ids given bare, and ids as numpy integers, are the same prompt; a bool or a
        # float is no token id.
        first = cases[0]
        kw = dict(params=self.greedy_params(first))
        self.assertEqual(self.engine.generate(first["prompt_ids"], **kw)[0].token_ids,
                         first["greedy_ids"])
        try:
            import numpy
        except ImportError:
            numpy = None
        if numpy is not None:
            ids = list(numpy.array(first["prompt_ids"], dtype=numpy.int64))
            self.assertEqual(self.engine.generate([ids], **kw)[0].token_ids, first["greedy_ids"])
            # Arrays: a 1-D one is a prompt, a 2-D one a prompt a row (they had been read as
            # one prompt whose ids failed in numpy's __index__).
            array = numpy.array(first["prompt_ids"])
            for prompts in (array, [array], numpy.stack([array, array])):
                outs = self.engine.generate(prompts, **kw)
                self.assertEqual([o.token_ids for o in outs],
                                 [first["greedy_ids"]] * len(outs))
            self.assertEqual(len(self.engine.generate(numpy.stack([array, array]), **kw)), 2)
            # numpy numbers are numbers to the sampling parameters too
            p = nanoinfer.SamplingParams(temperature=numpy.float32(0.5), top_k=numpy.int64(3))
            self.assertEqual((p.temperature, p.top_k), (0.5, 3))
        for bad in ([True, 2], [1.5]):
            with self.assertRaisesRegex(TypeError, "token ids"):
                self.engine.generate([bad])
        self.assertEqual(stats["decode_tokens"], sum(len(c["greedy_ids"]) - 1 for c in cases))

    def test_keywords_and_params_object_sample_the_same_tokens(self):
        prompt = self.ref["cases"][0]["prompt_ids"]
        kw = dict(temperature=0.9, top_k=20, top_p=0.9, seed=7, max_new_tokens=12, ignore_eos=True)
        a = self.engine.generate([prompt], **kw)[0]
        b = self.engine.generate([prompt], params=nanoinfer.SamplingParams(**kw))[0]
        c = self.engine.generate([prompt], **dict(kw, seed=8))[0]
        self.assertEqual(a.token_ids, b.token_ids)
        self.assertEqual(len(a.token_ids), 12)
        self.assertNotEqual(a.token_ids, c.token_ids)  # the seed reaches the sampler

    def test_unseeded_prompts_draw_their_own_seeds(self):
        prompt = self.ref["cases"][0]["prompt_ids"]
        kw = dict(temperature=1.5, max_new_tokens=16, ignore_eos=True)
        self.assertIsNone(nanoinfer.SamplingParams().seed)
        a, b, greedy = self.engine.generate([prompt, prompt, prompt], params=[
            nanoinfer.SamplingParams(**kw), nanoinfer.SamplingParams(**kw, seed=None),
            nanoinfer.SamplingParams(max_new_tokens=2)])
        self.assertNotEqual(a.seed, b.seed)
        self.assertNotEqual(a.token_ids, b.token_ids)  # equal prompts sample apart
        self.assertIsNone(greedy.seed)
        again = self.engine.generate([prompt], **dict(kw, seed=a.seed))[0]
        self.assertEqual(again.token_ids, a.token_ids)  # its seed samples it again
        self.assertEqual(again.seed, a.seed)
        self.assertEqual(pickle.loads(pickle.dumps(a)).seed, a.seed)
        for bad, shown in ((1.5, "1.5 (float)"), (True, "True (bool)"), ("3", "'3' (str)")):
            with self.assertRaisesRegex(TypeError,
                                        re.escape(f"seed must be None or an integer, got {shown}")):
                nanoinfer.SamplingParams(seed=bad)

    def test_logprobs_are_hfs_log_softmax(self):
        case = self.ref["cases"][0]
        logits = case["last_logits"]
        top = max(logits)
        log_z = top + math.log(sum(math.exp(x - top) for x in logits))
        out = self.engine.generate([case["prompt_ids"]], max_new_tokens=3, logprobs=2)[0]
        self.assertEqual(len(out.logprobs), 3)
        first = out.logprobs[0]
        self.assertAlmostEqual(first.logprob, logits[out.token_ids[0]] - log_z, delta=2e-4)
        self.assertEqual(len(first.top), 2)
        self.assertEqual(first.top[0][0], out.token_ids[0])
        self.assertAlmostEqual(first.top[1][1], logits[first.top[1][0]] - log_z, delta=2e-4)
        self.assertEqual(self.engine.generate([case["prompt_ids"]], max_new_tokens=3)[0].logprobs,
                         [])

    def test_logit_bias_forces_a_token(self):
        prompt = self.ref["cases"][0]["prompt_ids"]
        out = self.engine.generate([prompt], max_new_tokens=3, ignore_eos=True,
                                   logit_bias=[(5, 100.0)])[0]
        self.assertEqual(out.token_ids, [5, 5, 5])
        for as_dict in ({5: 100.0}, {"5": 100}):  # the OpenAI API's form too
            params = nanoinfer.SamplingParams(max_new_tokens=3, ignore_eos=True,
                                              logit_bias=as_dict)
            self.assertEqual(params.logit_bias, [(5, 100.0)])
            self.assertEqual(self.engine.generate([prompt], params=params)[0].token_ids, [5, 5, 5])
        for bad in ({"x": 1.0}, {5.7: 1.0}, {True: 1.0}):  # (5.7 had biased token 5)
            with self.assertRaisesRegex(TypeError, "logit_bias"):
                nanoinfer.SamplingParams(logit_bias=bad)

    def test_prompt_logprobs_score_the_prompt(self):
        case = self.ref["cases"][0]
        logits = case["last_logits"]
        top = max(logits)
        log_z = top + math.log(sum(math.exp(x - top) for x in logits))
        prompt = case["prompt_ids"] + case["greedy_ids"][:1]
        out = self.engine.generate([prompt], max_new_tokens=1, prompt_logprobs=1)[0]
        self.assertEqual(len(out.prompt_logprobs), len(prompt) - 1)
        last = out.prompt_logprobs[-1]  # HF's last logits score the greedy token
        self.assertAlmostEqual(last.logprob, logits[prompt[-1]] - log_z, delta=2e-4)
        self.assertEqual(last.top[0][0], prompt[-1])
        self.assertEqual(out.logprobs, [])

    def test_unset_max_new_tokens_fits_the_room_the_prompt_leaves(self):
        # The context holds 256 positions: the default 128 new tokens do not fit after 250.
        prompt = [1 + i % 300 for i in range(250)]
        out = self.engine.generate([prompt, [5, 9]], ignore_eos=True)
        self.assertEqual([len(o.token_ids) for o in out], [6, 128])
        stream = self.engine.stream(prompt, ignore_eos=True)
        list(stream)
        self.assertEqual(len(stream.token_ids), 6)
        with self.assertRaisesRegex(nanoinfer.Error, "exceed"):  # asked for: refused
            self.engine.generate([prompt], max_new_tokens=128)

    def test_ctrl_c_stops_a_stream_of_tokens_without_text(self):
        # A model without a tokenizer streams no pieces: next() steps to the end, and Ctrl-C is
        # looked for after each step (it was not, until the request had run out).
        engine = long_tiny()
        stream = engine.stream([1, 2, 3], max_new_tokens=8000, ignore_eos=True)
        timer = threading.Timer(0.2, _thread.interrupt_main)
        timer.start()
        with self.assertRaises(KeyboardInterrupt):
            next(stream)
        timer.join()
        self.assertLess(len(stream.token_ids), 8000)  # stopped early, the stream still open
        stream.close()
        with self.assertRaises(StopIteration):
            next(stream)
        self.assertEqual(len(engine.generate([[1, 2, 3]], max_new_tokens=2)[0].token_ids), 2)

    def test_ctrl_c_is_heard_between_a_long_prompts_chunks(self):
        # A prompt prefilled in chunks (max_step_tokens) gives no token to look for Ctrl-C on
        # until its last chunk: the end of each step looks too (it had heard it only then).
        engine = long_tiny(max_step_tokens=2)
        prompt = [1 + i % 300 for i in range(8000)]
        timer = threading.Timer(0.2, _thread.interrupt_main)
        timer.start()
        with self.assertRaises(KeyboardInterrupt):
            engine.generate([prompt], max_new_tokens=1)
        timer.join()
        self.assertLess(engine.last_stats["prefill_tokens"], 8000)  # stopped within the prompt
        self.assertEqual(len(engine.generate([[1, 2, 3]], max_new_tokens=2)[0].token_ids), 2)

    def test_outputs_compare_copy_and_pickle_by_value(self):
        prompt = self.ref["cases"][0]["prompt_ids"]
        kw = dict(max_new_tokens=3, logprobs=2, prompt_logprobs=1, ignore_eos=True)
        out = self.engine.generate([prompt], **kw)[0]
        self.assertEqual(self.engine.generate([prompt], **kw)[0], out)
        for twin in (copy.copy(out), copy.deepcopy(out), pickle.loads(pickle.dumps(out))):
            self.assertEqual(twin, out)
            self.assertEqual((twin.token_ids, twin.logprobs[1].top, twin.prompt_logprobs[0].logprob),
                             (out.token_ids, out.logprobs[1].top, out.prompt_logprobs[0].logprob))
        self.assertEqual(pickle.loads(pickle.dumps(out.logprobs[0])), out.logprobs[0])
        self.assertNotEqual(self.engine.generate([prompt], **dict(kw, max_new_tokens=2))[0], out)
        self.assertNotEqual(out, out.token_ids)
        with self.assertRaises(TypeError):
            hash(out)
        beams = self.engine.generate([prompt], num_beams=2, num_return_sequences=2,
                                     max_new_tokens=3, ignore_eos=True)[0]
        self.assertEqual(pickle.loads(pickle.dumps(beams)).scores, beams.scores)
        # Every pickle protocol (0 and 1 aborted the interpreter); what does not pickle refuses.
        params = nanoinfer.SamplingParams(temperature=0.5, seed=3)
        for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
            for value in (out, out.logprobs[0], params):
                self.assertEqual(pickle.loads(pickle.dumps(value, protocol)), value)
            with self.assertRaises(TypeError):
                pickle.dumps(self.engine, protocol)

    def test_eos_ids_outside_the_vocabulary_are_refused(self):
        vocab = self.engine.config["vocab_size"]
        with self.assertRaisesRegex(nanoinfer.Error, f"eos_token_ids: id {vocab} is outside"):
            self.engine.generate([[1, 2]], eos_token_ids=[vocab])
        with self.assertRaisesRegex(nanoinfer.Error, "eos_token_ids must be token ids >= 0"):
            self.engine.generate([[1, 2]], eos_token_ids=[-1])

    def test_streams_read_in_turn_each_give_their_tokens_alone(self):
        cases = self.ref["cases"]
        alone = [self.engine.generate([c["prompt_ids"]], params=self.greedy_params(c))[0]
                 for c in cases]
        streams = [self.engine.stream(c["prompt_ids"], params=self.greedy_params(c))
                   for c in cases]
        for s in streams:
            self.assertIsNone(s.output)
        pending = list(streams)
        while pending:  # one piece of each in turn, so both advance in the same steps
            for s in list(pending):
                try:
                    next(s)
                except StopIteration:
                    pending.remove(s)
        for s, a in zip(streams, alone):
            self.assertEqual(s.output.token_ids, a.token_ids)

    def test_threads_share_an_engine_one_call_at_a_time(self):
        cases = self.ref["cases"]
        alone = [self.engine.generate([c["prompt_ids"]], params=self.greedy_params(c))[0]
                 for c in cases]
        got = {}

        def run(i):
            c = cases[i % len(cases)]
            got[i] = self.engine.generate([c["prompt_ids"]], params=self.greedy_params(c))[0]

        threads = [threading.Thread(target=run, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for i in range(6):
            self.assertEqual(got[i].token_ids, alone[i % len(cases)].token_ids)

    def test_beam_search_returns_its_hypotheses_best_first(self):
        prompt = self.ref["cases"][0]["prompt_ids"]
        out = self.engine.generate(
            [prompt], num_beams=3, num_return_sequences=2, max_new_tokens=6, ignore_eos=True
        )[0]
        self.assertEqual(len(out.sequences), 2)
        self.assertEqual(out.token_ids, out.sequences[0])
        self.assertGreaterEqual(out.scores[0], out.scores[1])

    def test_sampling_params_fields(self):
        p = nanoinfer.SamplingParams(early_stopping="never", stop=["\n\n"], max_new_tokens=3)
        self.assertEqual(p.early_stopping, "never")
        self.assertEqual(p.stop, ["\n\n"])
        self.assertEqual(nanoinfer.SamplingParams(stop="\n").stop, ["\n"])  # one string
        self.assertEqual(nanoinfer.SamplingParams(seed=2**64 - 1).seed, 2**64 - 1)
        for bad in (-1, 2**64):
            with self.assertRaisesRegex(ValueError, f"seed must be an integer in .*, got {bad}"):
                nanoinfer.SamplingParams(seed=bad)
        p.early_stopping = True
        self.assertIs(p.early_stopping, True)
        self.assertEqual(nanoinfer.SamplingParams().max_new_tokens, 128)
        with self.assertRaises(ValueError):
            p.early_stopping = "sometimes"
        # Shown by the fields that differ from the defaults, compared, copied and pickled by value.
        q = nanoinfer.SamplingParams(temperature=0.7, top_p=0.9, stop=["x"], seed=3)
        self.assertEqual(repr(q), "SamplingParams(temperature=0.7, top_p=0.9, seed=3, stop=['x'])")
        self.assertEqual(repr(nanoinfer.SamplingParams()), "SamplingParams()")
        self.assertEqual(nanoinfer.SamplingParams(), nanoinfer.SamplingParams())
        for twin in (copy.copy(q), copy.deepcopy(q), pickle.loads(pickle.dumps(q))):
            self.assertIsNot(twin, q)
            self.assertEqual(twin, q)
        twin = copy.copy(q)
        twin.temperature = 0.5
        self.assertNotEqual(twin, q)
        self.assertAlmostEqual(q.temperature, 0.7, places=6)
        with self.assertRaises(TypeError):
            hash(q)

    def test_every_field_and_method_has_a_docstring(self):
        classes = (nanoinfer.Engine, nanoinfer.SamplingParams, nanoinfer.GenerationOutput,
                   nanoinfer.TokenLogprobs, nanoinfer.Tokenizer, nanoinfer.Stream)
        for cls in classes:
            self.assertTrue(cls.__doc__, cls.__name__)
            for name, attr in vars(cls).items():
                doc = getattr(attr, "__doc__", None) or ""
                if name.startswith("_") and (name != "__init__" or doc.startswith("Initialize")):
                    continue  # (a class Python cannot construct has object's own __init__)
                # A method's doc starts with pybind11's signature line; a property's is its own.
                body = doc if isinstance(attr, property) else doc.partition("\n")[2]
                self.assertTrue(body.strip(), f"{cls.__name__}.{name}: {doc!r}")
        for f in (nanoinfer.load_tokenizer, nanoinfer.default_model_path):
            self.assertTrue(f.__doc__.partition("\n")[2].strip(), f.__name__)

    def test_bad_input_is_refused_with_a_message(self):
        ids = [[1, 2, 3]]
        with self.assertRaisesRegex(TypeError, "unknown sampling parameter 'temprature'"):
            self.engine.generate(ids, temprature=0.5)
        with self.assertRaisesRegex(nanoinfer.Error, "temperature"):
            self.engine.generate(ids, temperature=-1.0)
        with self.assertRaisesRegex(nanoinfer.Error, "no tokenizer"):
            self.engine.generate(["text"])
        with self.assertRaisesRegex(TypeError, "not both"):
            self.engine.generate(ids, params=nanoinfer.SamplingParams(), top_k=3)
        # A value of the wrong type names its field and the value (pybind11's own message names
        # neither).
        # What Python would coerce is refused too: a bool for a number, a number for a flag.
        for kw, value in ((dict(max_new_tokens=3.0), "3.0 (float)"),
                          (dict(stop=5), "5 (int)"),
                          (dict(max_new_tokens=True), "True (bool)"),
                          (dict(temperature=True), "True (bool)"),
                          (dict(ignore_eos=0.5), "0.5 (float)"),
                          (dict(ignore_eos=1), "1 (int)"),
                          (dict(top_p="0.9"), "'0.9' (str)")):
            field = next(iter(kw))
            with self.assertRaisesRegex(
                    TypeError, f"^{field} must be .*, got {re.escape(value)}$"):
                self.engine.generate(ids, **kw)
        # A keyword names the bad item of a list as the attribute does.
        for kw, message in ((dict(stop=["a", 1]), "stop: a stop string must be a str, got 1 (int)"),
                            (dict(eos_token_ids=[2, True]),
                             "eos_token_ids: a token id must be an integer, got True (bool)")):
            with self.assertRaisesRegex(TypeError, re.escape(message)):
                self.engine.generate(ids, **kw)
        # HF's and vLLM's names for a parameter are named with this engine's, and the list given.
        for name, ours in (("max_tokens", "max_new_tokens"), ("stop_token_ids", "eos_token_ids")):
            with self.assertRaisesRegex(TypeError, re.escape(
                    f"unknown sampling parameter '{name}' (this engine's: {ours}") +
                    ".*; the parameters: temperature, top_k, .*early_stopping"):
                self.engine.generate(ids, **{name: 3})
        # None keeps a field's default (vLLM's stop=None, HF's max_new_tokens=None); an unset
        # length still fits the room left.
        self.assertEqual(nanoinfer.SamplingParams(stop=None, temperature=None, seed=None),
                         nanoinfer.SamplingParams())
        self.assertEqual(
            self.engine.generate(ids, max_new_tokens=None, stop=None)[0].token_ids,
            self.engine.generate(ids)[0].token_ids)
        # The stop strings as an attribute: a str or a list of them, each named where it is not
        # (pybind11 had raised RuntimeError "Unable to cast"); a lone surrogate is a ValueError.
        p = nanoinfer.SamplingParams()
        for value, error, message in ((None, TypeError, "stop must be a str or a list of str, "
                                                        "got None (NoneType)"),
                                      ([1], TypeError, "stop: a stop string must be a str, got "
                                                       "1 (int)"),
                                      ("\ud800", ValueError, "a stop string must be UTF-8"),
                                      (["a", "\ud800"], ValueError, "a stop string must be UTF-8")):
            with self.assertRaisesRegex(error, re.escape(message)):
                p.stop = value
        p.stop = ("a", "b")
        self.assertEqual(p.stop, ["a", "b"])
        with self.assertRaisesRegex(ValueError, "a stop string must be UTF-8"):
            nanoinfer.SamplingParams(stop="\ud800")
        with self.assertRaisesRegex(ValueError, re.escape(
                f"max_new_tokens must be an integer in [-2147483648, 2147483647], got {2**40}")):
            self.engine.generate(ids, max_new_tokens=2**40)
        with self.assertRaisesRegex(TypeError, "num_beams must be an integer"):
            nanoinfer.SamplingParams().num_beams = 2.0
        # ... and so are bools among token ids and biases (True was read as id 1), and a number
        # beyond a float (10**400 raised OverflowError; 1e300 was kept as inf).
        p = nanoinfer.SamplingParams()
        for field, value, error, message in (
                ("eos_token_ids", [3, True], TypeError, "eos_token_ids: a token id must be an "
                                                        "integer"),
                ("suppress_tokens", [True], TypeError, "suppress_tokens: a token id must be"),
                ("suppress_tokens", 5, TypeError, "suppress_tokens must be a list of token ids"),
                ("logit_bias", [(True, 1)], TypeError, "logit_bias: a token id must be"),
                ("logit_bias", {5: True}, TypeError, "logit_bias: a bias must be a number"),
                ("logit_bias", [(5, 1, 2)], TypeError, "got an item (5, 1, 2)"),
                ("logit_bias", [5], TypeError, "got an item 5"),
                ("temperature", 10**400, ValueError, "temperature is beyond a 32-bit float"),
                ("min_p", 1e300, ValueError, "min_p is beyond a 32-bit float, got 1e+300")):
            with self.assertRaisesRegex(error, re.escape(message)):
                setattr(p, field, value)
        p.eos_token_ids, p.logit_bias = (5, 7), [(5, 2)]
        self.assertEqual((p.eos_token_ids, p.logit_bias), ([5, 7], [(5, 2.0)]))
        with self.assertRaisesRegex(TypeError, "params: a SamplingParams, or a list of them"):
            self.engine.generate(ids, params={"max_new_tokens": 3})
        # vLLM's call: the parameters second, by position or as sampling_params.
        three = nanoinfer.SamplingParams(max_new_tokens=3)
        alone = self.engine.generate(ids, params=three)[0].token_ids
        self.assertEqual(len(alone), 3)
        self.assertEqual(self.engine.generate(ids, three)[0].token_ids, alone)
        self.assertEqual(self.engine.generate(ids, sampling_params=three)[0].token_ids, alone)
        self.assertEqual(list(self.engine.stream(ids[0], three)), [])  # (no tokenizer, no text)
        with self.assertRaisesRegex(TypeError, "give params or sampling_params, not both"):
            self.engine.generate(ids, three, sampling_params=three)
        # vLLM's prompt dicts are named as such (they read as chat messages without a role).
        for prompts in ([{"prompt_token_ids": [1, 2]}], {"prompt_token_ids": [1, 2]},
                        {"prompt": "Hi"}):
            with self.assertRaisesRegex(TypeError, "vLLM's prompt dicts .* are not taken"):
                self.engine.generate(prompts)
        # One chat message not in a list, or no prompt at all, says what a prompt is.
        with self.assertRaisesRegex(TypeError, r"not a dict \(a conversation is a list"):
            self.engine.generate({"role": "user", "content": "Hi"})
        with self.assertRaisesRegex(TypeError, r"a str or a list of prompts, got 3 \(int\)"):
            self.engine.generate(3)
        with self.assertRaisesRegex(ValueError, "2 sampling parameters for 1 prompt$"):
            self.engine.generate(ids, params=[nanoinfer.SamplingParams()] * 2)
        with self.assertRaisesRegex(TypeError, "token ids"):
            self.engine.generate([[1.5, 2]])
        with self.assertRaisesRegex(nanoinfer.Error, "vocab"):
            self.engine.generate([[10**6]])
        for big in (2**31, -(2**31) - 1, 2**70):  # past int32: refused as such, not a cast error
            with self.assertRaisesRegex(nanoinfer.Error, f"token id {big} is outside the vocab"):
                self.engine.generate([[1, big]])
        with self.assertRaisesRegex(nanoinfer.Error, "block_size must be >= 1, got 0"):
            nanoinfer.Engine(os.path.join(DATA, "no_such_model"), block_size=0)
        with self.assertRaises(nanoinfer.Error):
            nanoinfer.Engine(os.path.join(DATA, "no_such_model"))
        self.assertEqual(self.engine.generate([]), [])
        self.assertEqual(self.engine.config["num_kv_heads"], 2)
        # chat=True with token ids: a warning that the template does not apply to them.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            self.engine.generate(ids, chat=True, max_new_tokens=1)
        self.assertEqual([str(w.message) for w in caught],
                         ["chat=True: the chat template applies to text prompts only, not to "
                          "token ids"])
        # A path as an os.PathLike.
        self.assertEqual(nanoinfer.Engine(pathlib.Path(tiny())).config["num_kv_heads"], 2)
        # A context beyond the model's positions (256 here), as the CLI refuses it.
        with self.assertRaisesRegex(nanoinfer.Error, "max_context 300 exceeds the model's 256"):
            nanoinfer.Engine(tiny(), max_context=300)
        # Engine options are read as sampling parameters are: nothing coerced (a bool or None
        # had been taken for a flag or a number: warmup=None as False, max_context=True as 1),
        # and a misspelt one named (it had been pybind11's list of signatures).
        for options, error, message in (
                ({"maxcontext": 64}, TypeError, "unknown engine option 'maxcontext' .*max_context"),
                ({"max_context": True}, TypeError, r"max_context must be an integer, got True"),
                ({"max_context": 64.0}, TypeError, r"max_context must be an integer, got 64.0"),
                ({"max_context": "64"}, TypeError, r"must be an integer, got '64' \(str\)"),
                ({"warmup": None}, TypeError, "warmup must be True or False, got None"),
                ({"cuda_graphs": 1}, TypeError, "cuda_graphs must be True or False, got 1"),
                ({"backend": 3}, TypeError, "backend must be a str, got 3 \\(int\\)"),
                ({"config": 3}, TypeError, "config must be a path"),
                ({"max_context": 2**40}, ValueError, "max_context must be an integer in")):
            with self.assertRaisesRegex(error, message, msg=str(options)):
                nanoinfer.Engine(tiny(), **options)
        with self.assertRaisesRegex(TypeError, "model must be a path"):
            nanoinfer.Engine(3)
        # The CUDA backend's options on the CPU say they change nothing (as the CLI's flags do).
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            nanoinfer.Engine(tiny(), dtype="f32", warmup=False)
            nanoinfer.Engine(tiny(), max_context=64)
            # ... and are ignored, even where the CUDA backend would refuse them (an Error had
            # followed the warning).
            nanoinfer.Engine(tiny(), dtype="float16")
        self.assertEqual([str(w.message) for w in caught],
                         ["dtype, warmup: CUDA backend only, ignored on backend 'cpu'",
                          "dtype: CUDA backend only, ignored on backend 'cpu'"])

    def test_profile_report_needs_profile_on(self):
        e = nanoinfer.Engine(tiny(), profile=True)
        e.generate([[1, 2, 3]], max_new_tokens=3)
        report = e.profile_report()
        for part in ("prefill: ", "decode: ", "attention", "embedding"):
            self.assertIn(part, report)
        # Without it there is nothing to report: an Error (it had returned "").
        with self.assertRaisesRegex(nanoinfer.Error, "made without profile=True"):
            self.engine.profile_report()

    def test_ctrl_c_is_heard_while_another_thread_holds_the_engine(self):
        # The main thread waited for the other thread's call without the GIL, and so without
        # running Python's handlers: KeyboardInterrupt came only once that call had ended.
        script = (
            "import nanoinfer, os, signal, threading, time\n"
            f"e = nanoinfer.Engine({tiny()!r})\n"
            "def handler(*_): raise KeyboardInterrupt\n"
            "signal.signal(signal.SIGALRM, handler)\n"
            "t = threading.Thread(target=lambda: e.generate([[1, 2]] * 2048, max_new_tokens=250,"
            " ignore_eos=True), daemon=True)\n"
            "t.start(); time.sleep(0.5); signal.setitimer(signal.ITIMER_REAL, 0.2)\n"
            "try:\n"
            "    e.generate([[1, 2]], max_new_tokens=2)\n"
            "    print('not interrupted', t.is_alive(), flush=True)\n"
            "except KeyboardInterrupt:\n"
            "    print('interrupted', t.is_alive(), flush=True)\n"
            "os._exit(0)\n")
        r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           timeout=120)
        self.assertEqual(r.stdout.strip(), "interrupted True", r.stderr)

    def test_a_stream_dropped_in_a_signal_handler_closes(self):
        # The handler runs inside another stream's next(), on the thread holding the engine: the
        # dropped stream's close() could not take the lock, so it stayed counted open and every
        # later generate() said "a stream of this engine is still open".
        held = {"b": self.engine.stream([1, 2], max_new_tokens=200, ignore_eos=True)}
        a = self.engine.stream([1, 2], max_new_tokens=200, ignore_eos=True)
        dropped = []

        def handler(*_):
            try:
                a.token_ids  # outside the call: the next tick
            except nanoinfer.Error:  # inside next(a), whose thread holds the engine
                if held:
                    del held["b"]
                    dropped.append(True)

        old = signal.signal(signal.SIGALRM, handler)
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.0005, 0.0005)
            self.assertEqual(list(a), [])  # (no tokenizer: no text; every step looks for signals)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
        self.assertEqual(dropped, [True])
        self.assertEqual(len(a.token_ids), 200)
        self.assertEqual(len(self.engine.generate([[1, 2]], max_new_tokens=2)[0].token_ids), 2)


class TextModel(unittest.TestCase):
    """Random weights of a small shape with SmolLM2's tokenizer and chat template (fp32 CPU)."""

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.TemporaryDirectory()
        cls.engine = nanoinfer.Engine(os.path.join(DATA, "tokenizer", "smollm2"),
                                      random_weights=True,
                                      config=model_files.write_config(cls.dir.name))

    @classmethod
    def tearDownClass(cls):
        cls.dir.cleanup()

    def test_stream_pieces_add_up_to_the_text_of_generate(self):
        kw = dict(max_new_tokens=24, ignore_eos=True)
        alone = self.engine.generate("Once upon a time", **kw)[0]
        s = self.engine.stream("Once upon a time", **kw)
        pieces = list(s)
        self.assertGreater(len(pieces), 1)
        self.assertEqual("".join(pieces), alone.text)
        self.assertEqual(s.token_ids, alone.token_ids)
        self.assertEqual(s.output.token_ids, alone.token_ids)
        # A stop string: the text held back while it may be one, and cut where it is.
        stop = alone.text[len(alone.text) // 2:][:3]
        cut = self.engine.generate("Once upon a time", stop=[stop], **kw)[0]
        self.assertEqual(cut.finish_reason, "stop")
        self.assertEqual(cut.text, alone.text[: alone.text.index(stop)])
        s = self.engine.stream("Once upon a time", stop=[stop], **kw)
        self.assertEqual("".join(s), cut.text)

    def test_a_streams_next_turn_takes_the_last_turns_blocks(self):
        kw = dict(max_new_tokens=20, ignore_eos=True)
        prompt = [100 + 7 * i for i in range(40)]
        first = self.engine.stream(prompt, **kw)
        list(first)
        self.assertEqual(first.output.reused_prompt_tokens, 0)
        turn = prompt + first.output.token_ids + [7, 8, 9]
        second = self.engine.stream(turn, **kw)
        list(second)
        # The first turn's cache held 40 + 19 tokens: three whole blocks of 16.
        self.assertEqual(second.output.reused_prompt_tokens, 48)
        self.assertEqual(second.output.token_ids, self.engine.generate([turn], **kw)[0].token_ids)

    def test_date_string_dates_a_llama32_chat_prompt(self):
        # generate() and stream() pass date_string to the template, as apply_chat_template
        # does: the prompt is the one that text encodes, scored the same, and another date's
        # is another prompt.
        with tempfile.TemporaryDirectory() as d:
            model_files.write_llama32_tokenizer(d, DATA)
            path = model_files.write_config(d, vocab_size=128256, bos_token_id=128000,
                                            eos_token_id=128009)
            engine = nanoinfer.Engine(d, random_weights=True, config=path)
        tok = engine.tokenizer
        messages = [{"role": "user", "content": "Hi there"}]
        kw = dict(max_new_tokens=2, ignore_eos=True, prompt_logprobs=1)

        def scored(prompt, **options):
            out = engine.generate([prompt], **options, **kw)[0]
            return out.prompt_logprobs, out.token_ids

        def ids(date):
            return tok.encode(tok.apply_chat_template(messages, date_string=date), False)

        dated = scored(messages, date_string="02 Mar 2025")
        self.assertEqual(dated, scored(ids("02 Mar 2025")))
        self.assertEqual(dated, scored("Hi there", chat=True, date_string="02 Mar 2025"))
        self.assertNotEqual(dated, scored(ids("03 Mar 2025")))
        s = engine.stream(messages, date_string="02 Mar 2025", **kw)
        list(s)
        self.assertEqual((s.output.prompt_logprobs, s.output.token_ids), dated)
        # Where no template writes it, it is refused rather than ignored.
        for call in (lambda: engine.generate("Hi", date_string="02 Mar 2025"),
                     lambda: engine.stream([1, 2], date_string="02 Mar 2025")):
            with self.assertRaisesRegex(ValueError, "give chat=True or chat messages"):
                call()
        with self.assertRaisesRegex(TypeError, r"date_string must be a str, got 2025 \(int\)"):
            engine.generate(messages, date_string=2025)

    def test_chat_messages_and_chat_text_are_the_same_prompt(self):
        kw = dict(max_new_tokens=6, ignore_eos=True)
        messages = [{"role": "user", "content": "Hi there"}]
        a, b = self.engine.generate([messages, "Hi there"], chat=True, **kw)
        self.assertEqual(a.token_ids, b.token_ids)
        c = self.engine.generate("Hi there", **kw)[0]  # without the template: another prompt
        self.assertNotEqual(a.token_ids, c.token_ids)
        # One conversation alone (a list of messages) is one prompt, as stream() takes it.
        self.assertEqual(self.engine.generate(messages, **kw)[0].token_ids, a.token_ids)
        # A final assistant message is left open and continued (HF's continue_final_message,
        # as its text-generation pipeline sets it); it had been closed and a new turn begun.
        tok = self.engine.tokenizer
        begun = messages + [{"role": "assistant", "content": "Hello! I am "}]
        text = tok.apply_chat_template(begun, continue_final_message=True)
        self.assertTrue(text.endswith("<|im_start|>assistant\nHello! I am "), text)
        self.assertEqual(tok.apply_chat_template(begun, add_generation_prompt=False), text +
                         "<|im_end|>\n")
        self.assertEqual(self.engine.generate(begun, **kw)[0].token_ids,
                         self.engine.generate([tok.encode(text, False)], **kw)[0].token_ids)
        with self.assertRaisesRegex(nanoinfer.Error, "exclude each other"):
            tok.apply_chat_template(begun, add_generation_prompt=True, continue_final_message=True)
        with self.assertRaisesRegex(TypeError, "'role' and 'content'"):
            self.engine.generate([[{"content": "no role"}]])
        with self.assertRaisesRegex(TypeError, r"'role' and 'content' \(str\)"):
            self.engine.generate([[{"role": "user", "content": None}]])
        with self.assertRaisesRegex(ValueError, "lone surrogate"):
            self.engine.generate("caf\udce9")
        # In a chat message and the tokenizer's methods too (they were RuntimeError and
        # TypeError, pybind11's words).
        with self.assertRaisesRegex(ValueError, "a chat message's content must be UTF-8"):
            self.engine.generate([[{"role": "user", "content": "caf\udce9"}]])
        tok = self.engine.tokenizer
        with self.assertRaisesRegex(ValueError, "text must be UTF-8"):
            tok.encode("caf\udce9")
        with self.assertRaisesRegex(ValueError, "a chat message's content must be UTF-8"):
            tok.apply_chat_template([{"role": "user", "content": "caf\udce9"}])
        with self.assertRaisesRegex(nanoinfer.Error, "chat message 0: unknown role 'usr'"):
            self.engine.generate([[{"role": "usr", "content": "Hi"}]])
        # A tool call the template would drop, and no messages at all (HF refuses both; they had
        # rendered a conversation without them).
        call = {"role": "assistant", "content": "", "tool_calls": [{"type": "function"}]}
        with self.assertRaisesRegex(ValueError, "'tool_calls': tool and function calls are not"):
            tok.apply_chat_template([{"role": "user", "content": "Hi"}, call])
        self.assertEqual(tok.apply_chat_template([dict(call, tool_calls=[], function_call=None)]),
                         tok.apply_chat_template([{"role": "assistant", "content": ""}]))
        with self.assertRaisesRegex(nanoinfer.Error, "a chat needs at least one message"):
            tok.apply_chat_template([])
        # Flags and texts as sampling parameters are read: nothing coerced (None had been taken
        # as False, 1 as True), and a wrong type named with its value (it had been pybind11's
        # signature list); messages as a tuple too.
        for call, message in (
                (lambda: self.engine.generate("Hi", chat="yes"),
                 r"chat must be True or False, got 'yes' \(str\)"),
                (lambda: self.engine.generate("Hi", chat=None), "chat must be True or False"),
                (lambda: self.engine.stream("Hi", chat=1), "chat must be True or False, got 1"),
                (lambda: tok.encode(3), r"text must be a str, got 3 \(int\)"),
                (lambda: tok.encode("Hi", add_special_tokens=None),
                 "add_special_tokens must be True or False, got None"),
                (lambda: tok.decode([1, 2], skip_special_tokens=1),
                 "skip_special_tokens must be True or False, got 1"),
                (lambda: tok.apply_chat_template("Hi"), "messages must be a list of chat messages"),
                (lambda: tok.apply_chat_template(messages, add_generation_prompt="no"),
                 "add_generation_prompt must be True or False, got 'no'")):
            with self.assertRaisesRegex(TypeError, message):
                call()
        self.assertEqual(tok.apply_chat_template(tuple(messages)), tok.apply_chat_template(messages))
        # HF's tokenize: False is the text (our default), True its ids, no special tokens added
        # (HF's default; the template wrote them); HF's usual call reads the same here.
        text = tok.apply_chat_template(messages)
        self.assertEqual(tok.apply_chat_template(messages, tokenize=False,
                                                 add_generation_prompt=True), text)
        ids = tok.apply_chat_template(messages, tokenize=True)
        self.assertEqual(ids, tok.encode(text, add_special_tokens=False))
        self.assertEqual(tok.decode(ids), text)
        with self.assertRaisesRegex(TypeError, "tokenize must be True or False, got 'no'"):
            tok.apply_chat_template(messages, tokenize="no")
        # HF's name for the messages; its other arguments named (pybind11 had listed signatures).
        self.assertEqual(tok.apply_chat_template(conversation=messages), text)
        with self.assertRaisesRegex(TypeError, "apply_chat_template\\(\\) does not take 'tools' "
                                               "\\(it takes messages or conversation"):
            tok.apply_chat_template(messages, tools=[])
        with self.assertRaisesRegex(TypeError, "apply_chat_template\\(\\) needs the messages"):
            tok.apply_chat_template()
        # HF's other names and arguments on encode and decode likewise.
        self.assertEqual(tok.decode(token_ids=ids), tok.decode(ids))
        for call, message in (
                (lambda: tok.encode("Hi", return_tensors="np"),
                 "encode() does not take 'return_tensors' (it takes text and add_special_tokens)"),
                (lambda: tok.decode(ids, clean_up_tokenization_spaces=False),
                 "decode() does not take 'clean_up_tokenization_spaces' (it takes ids or "
                 "token_ids, and skip_special_tokens)"),
                (lambda: tok.decode(ids, token_ids=ids), "give ids or token_ids, not both")):
            with self.assertRaisesRegex(TypeError, re.escape(message)):
                call()
        # A bad id is named, not the whole list (which read as if a list were refused).
        with self.assertRaisesRegex(TypeError, re.escape("ids: a token id must be an integer, "
                                                         "got [1, 2] (list)")):
            tok.decode([[1, 2], [3]])
        # date_string, the template variable, dates Llama-3.2's system turn (today's by default,
        # as in HF); SmolLM2's template does not read it.
        self.assertEqual(tok.apply_chat_template(messages, date_string="02 Mar 2025"),
                         tok.apply_chat_template(messages))
        with self.assertRaisesRegex(TypeError, r"date_string must be a str, got 2025 \(int\)"):
            tok.apply_chat_template(messages, date_string=2025)
        with tempfile.TemporaryDirectory() as d:
            model_files.write_llama32_tokenizer(d, DATA)
            llama32 = nanoinfer.load_tokenizer(d)
        dated = llama32.apply_chat_template(messages, date_string="02 Mar 2025")
        self.assertIn("\nToday Date: 02 Mar 2025\n\n<|eot_id|>", dated)
        today = time.strftime("%d %b %Y")
        self.assertIn(llama32.apply_chat_template(messages),
                      {dated.replace("02 Mar 2025", day) for day in (today, time.strftime("%d %b %Y"))})

    def test_ctrl_c_stops_a_long_generate(self):
        timer = threading.Timer(0.3, _thread.interrupt_main)
        timer.start()
        with self.assertRaises(KeyboardInterrupt):
            self.engine.generate(["Tell me a story"] * 8, max_new_tokens=480, ignore_eos=True)
        timer.join()
        self.assertLess(self.engine.last_stats["decode_tokens"], 8 * 479)  # stopped early
        self.assertEqual(len(self.engine.generate("x", max_new_tokens=2)[0].token_ids), 2)

    def test_a_signal_handler_that_calls_the_engine_gets_an_error(self):
        # Python runs it inside generate()'s token callback, on the thread holding the engine:
        # an Error, where it used to wait for that thread forever.
        got = []

        def handler(*_):
            try:
                got.append(self.engine.last_stats)
            except nanoinfer.Error as e:
                got.append(str(e))

        old = signal.signal(signal.SIGALRM, handler)
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.05)
            out = self.engine.generate(["Tell me a story"] * 4, max_new_tokens=400, ignore_eos=True)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
        self.assertEqual(len(out[0].token_ids), 400)  # (the handler's error was its own)
        self.assertEqual(got, ["the engine is in a call on this thread: a signal handler cannot "
                               "use it until that call returns"])

    def test_a_daemon_thread_generating_at_exit_ends_cleanly(self):
        # Python ends daemon threads as it exits: one in generate() or reading a stream took the
        # GIL back in a destructor there and aborted (SIGABRT), or crashed taking it per token.
        script = (
            "import nanoinfer, threading, time, json\n"
            f"llm = nanoinfer.Engine({tiny()!r})\n"
            "def gen():\n"
            "    while True: llm.generate([[1, 2, 3]] * 4, max_new_tokens=200, ignore_eos=True)\n"
            "def read():\n"
            "    while True: list(llm.stream([4, 5], max_new_tokens=200, ignore_eos=True))\n"
            "threading.Thread(target=gen if __import__('sys').argv[1] == 'g' else read,\n"
            "                 daemon=True).start()\n"
            "time.sleep(0.2)\n"
        )
        for kind in ("g", "s", "g", "s"):
            r = subprocess.run([sys.executable, "-c", script, kind], capture_output=True,
                               text=True, timeout=120)
            self.assertEqual(r.returncode, 0, f"{kind}: {r.stderr}")

    def test_an_engine_in_a_forked_process_is_an_error(self):
        # Its OpenMP threads stay in the parent: a call in the child hung there.
        self.engine.generate([[1, 2]], max_new_tokens=2)
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            try:
                self.engine.generate([[1, 2]], max_new_tokens=2)
                message = b"no error"
            except nanoinfer.Error as e:
                message = str(e).encode()
            os.write(write, message)
            os._exit(0)
        os.close(write)
        with os.fdopen(read, "rb") as f:
            message = f.read().decode()
        os.waitpid(pid, 0)
        self.assertIn("this engine was made before the process forked", message)
        self.assertEqual(len(self.engine.generate([[1, 2]], max_new_tokens=2)[0].token_ids), 2)

    def test_generate_joins_open_streams(self):
        # generate() while a stream is open, this thread's or another's, runs in the streams'
        # steps (it raised "a stream of this engine is still open"): the same tokens as alone,
        # and the streams go on where they were, their pieces kept.
        prompts = ["The sea", "A short poem about"]
        kw = dict(max_new_tokens=12, ignore_eos=True)
        want = [o.token_ids for o in self.engine.generate(prompts, **kw)]
        story = dict(max_new_tokens=30, ignore_eos=True, temperature=0.8, seed=5)
        alone = self.engine.stream("Once upon a time", **story)
        want_story = "".join(alone)
        s = self.engine.stream("Once upon a time", **story)
        first = next(s)
        self.assertEqual([o.token_ids for o in self.engine.generate(prompts, **kw)], want)
        got = []
        reader = threading.Thread(target=lambda: got.extend(
            o.token_ids for o in self.engine.generate(prompts, **kw)))
        reader.start()
        reader.join()
        self.assertEqual(got, want)
        self.assertEqual(first + "".join(s), want_story)
        self.assertEqual(s.output.token_ids, alone.output.token_ids)

    def test_a_closed_stream_stops_and_frees_the_engine(self):
        s = self.engine.stream("Tell me a story", max_new_tokens=40, ignore_eos=True)
        next(s)
        self.assertGreaterEqual(len(s.token_ids), 1)
        with self.assertRaisesRegex(nanoinfer.Error, "still open"):
            self.engine.release_cache()
        read = list(s.token_ids)
        s.close()
        # Ended at once (the output here before any other call; it had waited for the next
        # step, and said "stop", a stop string's reason) with the tokens generated so far.
        self.assertEqual(s.output.finish_reason, "cancelled")
        self.assertEqual(s.output.token_ids, read)
        self.assertEqual(len(self.engine.generate("x", max_new_tokens=2)[0].token_ids), 2)
        with self.assertRaises(StopIteration):
            next(s)


class DefaultModel(unittest.TestCase):
    """SmolLM2-135M-Instruct (the default GGUF): text in, HF's greedy tokens and text out."""

    @classmethod
    def setUpClass(cls):
        if not os.path.exists(nanoinfer.default_model_path()):
            if os.environ.get("NANOINFER_REQUIRE_MODEL"):
                raise AssertionError("the default model is missing: run `make model`")
            raise unittest.SkipTest("the default model is not fetched (make model)")
        cls.engine = nanoinfer.Engine("default")
        cls.cases = read_json("smollm2/extra_greedy.json")["cases"]

    def test_an_engine_made_in_a_forked_process_runs(self):
        # OpenMP's pool, copied into the child, named threads that were not there: making an
        # engine in a child forked after one ran (multiprocessing's fork) hung. It now runs on
        # one core, with a warning that says so.
        want = self.engine.generate([[1, 2]], max_new_tokens=4, ignore_eos=True)[0].token_ids
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    engine = nanoinfer.Engine("default")
                ids = engine.generate([[1, 2]], max_new_tokens=4, ignore_eos=True)[0].token_ids
                message = repr((ids, [str(w.message) for w in caught]))
            except Exception as e:  # noqa: BLE001 (the parent reports it)
                message = repr(e)
            os.write(write, message.encode())
            os._exit(0)
        os.close(write)
        deadline = time.monotonic() + 60
        while os.waitpid(pid, os.WNOHANG) == (0, 0):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                self.fail("the forked child's engine hung")
            time.sleep(0.05)
        with os.fdopen(read, "rb") as f:
            ids, caught = eval(f.read().decode())  # noqa: S307 (our child's repr)
        self.assertEqual(ids, want)
        self.assertEqual(len(caught), 1)
        self.assertIn("forked from one that ran a nanoinfer Engine", caught[0])
        self.assertIn("'spawn'", caught[0])

    def test_text_and_chat_prompts_in_one_batch_give_hf_tokens_and_text(self):
        outs = self.engine.generate(
            [c["prompt_text"] for c in self.cases if not c["chat"]]
            + [[{"role": "user", "content": c["prompt_text"]}] for c in self.cases if c["chat"]],
            params=[nanoinfer.SamplingParams(max_new_tokens=c["max_new_tokens"])
                    for c in self.cases if not c["chat"]]
            + [nanoinfer.SamplingParams(max_new_tokens=c["max_new_tokens"])
               for c in self.cases if c["chat"]],
        )
        ordered = [c for c in self.cases if not c["chat"]] + [c for c in self.cases if c["chat"]]
        for out, c in zip(outs, ordered):
            self.assertEqual(out.token_ids, c["generated_ids"], c["name"])
            self.assertEqual(out.text, c["text"], c["name"])
            self.assertEqual(out.finish_reason, "eos" if c["stopped_at_eos"] else "length")

    def test_stream_pieces_add_up_to_hf_text(self):
        for c in self.cases:
            s = self.engine.stream(c["prompt_text"], chat=c["chat"],
                                   max_new_tokens=c["max_new_tokens"])
            pieces = list(s)
            self.assertGreater(len(pieces), 1, c["name"])
            self.assertEqual("".join(pieces), c["text"], c["name"])
            self.assertEqual(s.output.token_ids, c["generated_ids"], c["name"])

    def test_tokenizer_encodes_as_hf(self):
        tok = self.engine.tokenizer
        for c in self.cases:
            if c["chat"]:
                text = tok.apply_chat_template([{"role": "user", "content": c["prompt_text"]}])
                self.assertEqual(text, c["chat_text"])
                self.assertEqual(tok.encode(text, add_special_tokens=False), c["prompt_ids"])
            else:
                self.assertEqual(tok.encode(c["prompt_text"]), c["prompt_ids"])
            self.assertEqual(tok.decode(c["generated_ids"], skip_special_tokens=True), c["text"])
        self.assertIn(2, tok.eos_ids)
        # decode takes any sequence of ids, and refuses a bool or an id beyond 32 bits as such
        # (pybind11's message named neither).
        self.assertEqual(tok.decode((28, 29)), tok.decode([28, 29]))
        with self.assertRaisesRegex(TypeError, "ids: a token id must be an integer"):
            tok.decode([True])
        with self.assertRaisesRegex(ValueError, f"ids: a token id must be an integer in .*, got "
                                                f"{2**40}"):
            tok.decode([2**40])
        # HF's batch_decode (a text per list of ids) and len() (the ids it knows, specials in).
        self.assertEqual(
            tok.batch_decode([c["generated_ids"] for c in self.cases], skip_special_tokens=True),
            [c["text"] for c in self.cases])
        self.assertEqual(tok.batch_decode([]), [])
        self.assertEqual(len(tok), self.engine.config["vocab_size"])
        self.assertEqual(len(tok), tok.vocab_size)
        with self.assertRaisesRegex(TypeError, r"sequences must be a list of lists of token ids, "
                                               r"got 'ab' \(str\)"):
            tok.batch_decode("ab")
        with self.assertRaisesRegex(TypeError, r"sequences: a token id must be an integer, got "
                                               r"True \(bool\)"):
            tok.batch_decode([[1, True]])
        same = nanoinfer.load_tokenizer(nanoinfer.default_model_path())
        self.assertEqual(same.encode("Hello world"), tok.encode("Hello world"))
        # "default" and paths as os.PathLike, as Engine takes them.
        for path in ("default", pathlib.Path(nanoinfer.default_model_path())):
            self.assertEqual(nanoinfer.load_tokenizer(path).encode("Hello world"),
                             tok.encode("Hello world"))


class OpenMPSpin(unittest.TestCase):
    """Importing the package gives libgomp the CLI's short spin unless the user chose one: what
    libgomp itself read, as it prints it (OMP_DISPLAY_ENV) when the extension loads it."""

    def libgomp_settings(self, **env):
        e = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
        e.update(env, OMP_DISPLAY_ENV="verbose")
        r = subprocess.run([sys.executable, "-c", "import nanoinfer; print(nanoinfer.Engine)"],
                           env=e, capture_output=True, text=True, check=True)
        self.assertEqual(r.stdout.strip(), "<class 'nanoinfer.Engine'>")
        return r.stderr

    def test_short_spin_by_default(self):
        self.assertIn("GOMP_SPINCOUNT = '1000'", self.libgomp_settings())

    def test_the_users_choice_stands(self):
        self.assertIn("GOMP_SPINCOUNT = '20'", self.libgomp_settings(GOMP_SPINCOUNT="20"))
        passive = self.libgomp_settings(OMP_WAIT_POLICY="passive")
        self.assertIn("OMP_WAIT_POLICY = 'PASSIVE'", passive)
        self.assertNotIn("GOMP_SPINCOUNT = '1000'", passive)


class SharedLibraries(unittest.TestCase):
    """Importing the package and running an engine loads no NCCL (it is opened only for GPU
    ranks), so a newer NCCL of the same file name, torch's, loads after it: `import nanoinfer;
    import torch` had failed on "undefined symbol: ncclCommResume"."""

    def test_no_nccl_in_the_process(self):
        code = ("import nanoinfer\n"
                f"nanoinfer.Engine({tiny()!r}).generate([[1, 2]], max_new_tokens=1)\n"
                "print(any('libnccl' in line for line in open('/proc/self/maps')))")
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        self.assertEqual(r.stdout.strip(), "False")


if __name__ == "__main__":
    unittest.main(verbosity=2)
