"""The Python module on the CUDA backend: what tests/python/test_bindings.py checks on the CPU,
where the GPU changes the path (weights and cache on the device, CUDA graphs, the pick on the
GPU). Run by `scripts/device.sh python` on the GPU machine; skipped where no GPU is present.

    PYTHONPATH=build/python NI_TEST_DATA=tests/data python3 tests/gpu/test_python_cuda.py
"""
import json
import os
import sys
import tempfile
import unittest

import nanoinfer

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "python"))
import model_files  # noqa: E402  (tests/python's)

DATA = os.environ.get("NI_TEST_DATA",
                      os.path.join(os.path.dirname(__file__), os.pardir, "data"))


def cuda_engine(model, **options):
    try:
        return nanoinfer.Engine(model, backend="cuda", **options)
    except nanoinfer.Error as e:
        if "the CUDA backend is not available" in str(e):
            raise unittest.SkipTest(str(e)) from e
        raise


class TinyParity(unittest.TestCase):
    """HF's fp32 greedy tokens (tests/data/models/*/reference.json) through the module."""

    def test_fp32_greedy_matches_hf_alone_batched_and_without_graphs(self):
        for name in ("gqa", "tied", "llama3_rope", "odd_hidden"):
            with open(os.path.join(DATA, "models", name, "reference.json")) as f:
                ref = json.load(f)
            prompts = [c["prompt_ids"] for c in ref["cases"]]
            expected = [c["greedy_ids"] for c in ref["cases"]]
            for graphs in (True, False):
                with self.subTest(model=name, cuda_graphs=graphs):
                    e = cuda_engine(os.path.join(DATA, "models", name), dtype="f32",
                                    cuda_graphs=graphs)
                    # (params per prompt: each its reference's length)
                    params = [nanoinfer.SamplingParams(
                        max_new_tokens=len(ids), ignore_eos=not ref["eos_stops_generation"])
                        for ids in expected]
                    alone = [e.generate([p], params=[q])[0].token_ids
                             for p, q in zip(prompts, params)]
                    self.assertEqual(alone, expected)
                    # Three at once: the decode batch is padded to its bucket of 4.
                    batched = e.generate(prompts + prompts[:1], params=params + params[:1])
                    self.assertEqual([o.token_ids for o in batched], expected + expected[:1])


class TextModel(unittest.TestCase):
    """Random bf16 weights of a small shape with SmolLM2's tokenizer: text, streams, sampling."""

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.TemporaryDirectory()
        cls.engine = cuda_engine(os.path.join(DATA, "tokenizer", "smollm2"), random_weights=True,
                                 config=model_files.write_config(cls.dir.name))

    @classmethod
    def tearDownClass(cls):
        cls.dir.cleanup()

    def test_stream_pieces_add_up_to_the_text_of_generate(self):
        kw = dict(max_new_tokens=24, ignore_eos=True)
        alone = self.engine.generate("Once upon a time", **kw)[0]
        self.assertEqual(len(alone.token_ids), 24)
        s = self.engine.stream("Once upon a time", **kw)
        self.assertEqual("".join(s), alone.text)
        self.assertEqual(s.output.token_ids, alone.token_ids)
        # Chat messages and chat text are one prompt.
        messages = [{"role": "user", "content": "Hi there"}]
        a, b = self.engine.generate([messages, "Hi there"], chat=True, **kw)
        self.assertEqual(a.token_ids, b.token_ids)

    def test_sampling_on_the_gpu_repeats_with_its_seed(self):
        kw = dict(max_new_tokens=16, ignore_eos=True, temperature=0.9, top_p=0.95, top_k=50,
                  logprobs=2)
        # (batches of one shape: another batch size may take another GEMM, whose bf16 sums
        # may round apart)
        first = self.engine.generate(["Hello", "Hello"], seed=7, **kw)
        again = self.engine.generate(["Hello", "Hello"], seed=7, **kw)
        self.assertEqual([o.token_ids for o in again], [o.token_ids for o in first])
        self.assertEqual(first[0].token_ids, first[1].token_ids)  # one seed: the same draws
        self.assertEqual(len(first[0].logprobs), 16)
        for lp in first[0].logprobs:
            self.assertLessEqual(lp.logprob, 0.0)
            self.assertEqual(len(lp.top), 2)
        unseeded = self.engine.generate(["Hello"] * 2, **kw)
        self.assertIsNotNone(unseeded[0].seed)
        self.assertNotEqual(unseeded[0].seed, unseeded[1].seed)

    def test_stats_and_the_cache_given_back(self):
        self.engine.generate("Hello", max_new_tokens=4, ignore_eos=True)
        stats = self.engine.last_stats
        self.assertEqual(stats["decode_tokens"], 3)
        self.assertGreater(self.engine.weight_bytes, 0)
        self.engine.release_cache()
        self.assertEqual(len(self.engine.generate("Hello", max_new_tokens=4,
                                                  ignore_eos=True)[0].token_ids), 4)

    def test_torch_runs_on_the_gpu_beside_the_module(self):
        # The module loaded the system's CUDA runtime and cuBLASLt first; torch brings its own.
        try:
            import torch
        except ImportError:
            self.skipTest("no torch")
        a = torch.ones(64, 64, device="cuda", dtype=torch.bfloat16)
        self.assertEqual(float((a @ a)[0, 0]), 64.0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
