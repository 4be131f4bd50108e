#!/usr/bin/env python3
"""round_weights.py - a copy of an F32 model.safetensors with every weight stored as BF16 or F16.

clipeval loads BF16/F16 tensors and widens them to fp32, so tracing the copy measures the error
that 16-bit weights alone cause (fp32 arithmetic otherwise): the lower bound quoted next to the
bf16/fp16 tolerance presets of `clipeval compare` (README, "Checking another backend against
clipeval"):

    python3 tools/round_weights.py build/models/vitb32-synth/model.safetensors bf16 /tmp/b16/
    cp build/models/vitb32-synth/config.json /tmp/b16/
    clipeval trace --model /tmp/b16 --pixel-values golden/images/0.pixel_values.npy \
        --text "a photo of a cat" --out /tmp/b16-trace   # (needs the tokenizer files too)
    clipeval compare /tmp/b16-trace golden/debug/vitb32-synth --json

Rounding is to nearest, ties to even (torch's .to(torch.bfloat16) / .half()). Needs numpy only.
"""
import json
import os
import struct
import sys

import numpy as np


def to_bf16_bits(x):
    u = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16  # round to nearest even on the 16 dropped bits
    return u.astype(np.uint16)


def main(argv):
    if len(argv) != 3 or argv[1] not in ("bf16", "fp16"):
        sys.exit("usage: round_weights.py IN/model.safetensors bf16|fp16 OUT_DIR/")
    src, fmt, out_dir = argv
    with open(src, "rb") as f:
        data = f.read()
    (hlen,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + hlen])
    body = data[8 + hlen:]
    out_header, chunks, offset = {}, [], 0
    for name, meta in sorted(header.items(), key=lambda kv: kv[0]):
        if name == "__metadata__":
            out_header[name] = meta
            continue
        begin, end = meta["data_offsets"]
        raw = body[begin:end]
        if meta["dtype"] == "F32":
            x = np.frombuffer(raw, dtype="<f4")
            if fmt == "bf16":
                raw, dtype = to_bf16_bits(x).astype("<u2").tobytes(), "BF16"
            else:
                raw, dtype = x.astype("<f2").tobytes(), "F16"
        else:
            dtype = meta["dtype"]
        out_header[name] = {"dtype": dtype, "shape": meta["shape"],
                            "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(out_header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for c in chunks:
            f.write(c)


if __name__ == "__main__":
    main(sys.argv[1:])
