#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_safetensors (fuzz/corpus/safetensors/): a few tiny valid files
and a few invalid ones, each exercising one validation rule. Run from anywhere; deterministic."""
import json
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "safetensors")


def image(header, data=b"", pad=True):
    text = header if isinstance(header, str) else json.dumps(header, separators=(",", ":"))
    raw = text.encode("utf-8")
    if pad:
        raw += b" " * ((8 - len(raw) % 8) % 8)
    return struct.pack("<Q", len(raw)) + raw + data


def entry(dtype, shape, begin, end):
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


seeds = {
    # The reference implementation's test vector (attn.0, F32 [1, 2, 3], values 0..5).
    "valid_reference": image({"attn.0": entry("F32", [1, 2, 3], 0, 24)},
                             struct.pack("<6f", 0, 1, 2, 3, 4, 5)),
    "valid_empty": image({}),
    "valid_metadata_mixed": image(
        {"__metadata__": {"format": "pt", "note": "x"},
         "c": entry("I64", [1], 0, 8), "b": entry("F16", [2], 8, 12),
         "a": entry("BF16", [], 12, 14), "f": entry("F8_E4M3", [1], 14, 15),
         "g": entry("BOOL", [2], 15, 17), "h": entry("U8", [0, 3], 17, 17)},
        struct.pack("<q", -3) + struct.pack("<2e", 1.0, -2.0) + b"\x80\x3f" + b"\x38" + b"\x01\x00"),
    "valid_packed_i4": image({"__metadata__": {"frugal.packed.q": "i4:2,3"},
                              "q": entry("U8", [3], 0, 3)}, b"\x78\x0f\x21"),
    "valid_all_int": image({"i": entry("I32", [2], 0, 8), "j": entry("I8", [2, 1], 8, 10),
                            "k": entry("F64", [], 10, 18)}, bytes(18)),
    "invalid_overlap": image({"a": entry("F32", [2], 0, 8), "b": entry("F32", [1], 4, 8)},
                             bytes(8)),
    "invalid_hole": image({"a": entry("F32", [1], 4, 8)}, bytes(8)),
    "invalid_dtype": image({"a": entry("F31", [1], 0, 4)}, bytes(4)),
    "invalid_duplicate": image('{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
                               '"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', b"\x00"),
    "invalid_size": image({"a": entry("F32", [3], 0, 8)}, bytes(8)),
    "invalid_truncated": struct.pack("<Q", 4000) + b'{"a":',
    "invalid_metadata": image({"__metadata__": {"k": 1}}),
}

os.makedirs(OUT, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
print(f"wrote {len(seeds)} seeds to {OUT}")
