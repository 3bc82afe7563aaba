"""B2 GGUF header: hive's `read_gguf_facts` against gguf-py's `GGUFReader` on one file.

The file is synthetic but shaped like Meta-Llama-3-8B-Instruct Q4_K_M: the real metadata keys
and values, a `gpt2` tokenizer with 128,256 tokens, scores, token types and 280,147 merges,
and the 291 real tensor infos (names, shapes, quantized types). It is written once with the
`gguf` package (header, key/values and tensor infos only), then truncated to its full
declared size, so the tensor data is a hole: the file reads as 4.9 GB and costs a few MB of
disk. Both parsers read the same file, interleaved: GGUFReader in this process, hive's
parser in a child interpreter of the tree measured (`Tree`), timed after its imports.
"""

from __future__ import annotations

import gc
import importlib.metadata
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from benchmarks import Row, Tree, log, run_in_tree

BENCH = "B2 GGUF header"
PEER = f"gguf.GGUFReader (gguf-py {importlib.metadata.version('gguf')})"

# Meta-Llama-3-8B(-Instruct), as its GGUF conversions state them.
ARCH = "llama"
NAME = "Meta-Llama-3-8B-Instruct"
CONTEXT_LENGTH = 8192
EMBEDDING_LENGTH = 4096
BLOCK_COUNT = 32
FEED_FORWARD_LENGTH = 14336
HEAD_COUNT = 32
HEAD_COUNT_KV = 8
HEAD_DIM = EMBEDDING_LENGTH // HEAD_COUNT
ROPE_FREQ_BASE = 500000.0
RMS_EPSILON = 1e-5
VOCAB_SIZE = 128256
SPECIAL_TOKENS = 256  # ids 128000..128255: <|begin_of_text|>, <|eot_id|>, reserved ...
MERGES = 280147
BOS_ID, EOS_ID = 128000, 128009
CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}"
)
EXPECTED_PARAMETERS = 8_030_261_248


# -- the file ----------------------------------------------------------------------------
def _byte_tokens() -> list[str]:
    """GPT-2's byte-to-unicode alphabet: the 256 single-byte tokens of a byte-level BPE."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    extra = 0
    chars: dict[int, str] = {}
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def _vocabulary() -> tuple[list[str], list[float], list[int], list[str]]:
    """Tokens, scores, token types and merges of a synthetic Llama-3-sized byte-level BPE.

    Token lengths follow roughly Llama 3's (1 to 16 characters, most 3 to 8, often with a
    leading 'Ġ'); all tokens are distinct. Merges are 'left right' pairs of tokens.
    """
    rng = random.Random(3)
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    tokens = _byte_tokens()
    seen = set(tokens)
    normal = VOCAB_SIZE - SPECIAL_TOKENS
    while len(tokens) < normal:
        length = min(16, max(2, int(rng.gauss(6.5, 2.5))))
        word = "".join(rng.choices(alphabet, k=length))
        if rng.random() < 0.6:
            word = "Ġ" + word[1:]
        if word not in seen:
            seen.add(word)
            tokens.append(word)
    specials = ["<|begin_of_text|>", "<|end_of_text|>"]
    specials += [f"<|reserved_special_token_{i}|>" for i in range(4)]
    specials += ["<|start_header_id|>", "<|end_header_id|>", "<|reserved_special_token_4|>"]
    specials += ["<|eot_id|>"]
    specials += [f"<|reserved_special_token_{i}|>" for i in range(5, SPECIAL_TOKENS - 5)]
    tokens += specials
    assert len(tokens) == VOCAB_SIZE
    scores = [-float(i) for i in range(VOCAB_SIZE)]
    types = [int(gguf.TokenType.NORMAL)] * normal + [int(gguf.TokenType.CONTROL)] * SPECIAL_TOKENS
    merges = [
        f"{tokens[rng.randrange(normal)]} {tokens[rng.randrange(normal)]}" for _ in range(MERGES)
    ]
    return tokens, scores, types, merges


def _use_more_bits(layer: int, layers: int) -> bool:
    """llama.cpp's rule (llama-quant.cpp) for the layers Q4_K_M quantizes to Q6_K."""
    return layer < layers // 8 or layer >= 7 * layers // 8 or (layer - layers // 8) % 3 == 2


def tensor_infos() -> list[tuple[str, tuple[int, ...], gguf.GGMLQuantizationType]]:
    """Llama-3-8B's 291 tensors: name, shape in numpy order (rows, columns), Q4_K_M type."""
    q4, q6, f32 = (
        gguf.GGMLQuantizationType.Q4_K,
        gguf.GGMLQuantizationType.Q6_K,
        gguf.GGMLQuantizationType.F32,
    )
    emb, ffn, kv = EMBEDDING_LENGTH, FEED_FORWARD_LENGTH, HEAD_DIM * HEAD_COUNT_KV
    out: list[tuple[str, tuple[int, ...], gguf.GGMLQuantizationType]] = [
        ("token_embd.weight", (VOCAB_SIZE, emb), q4),
        ("output_norm.weight", (emb,), f32),
        ("output.weight", (VOCAB_SIZE, emb), q6),
    ]
    for i in range(BLOCK_COUNT):
        more = q6 if _use_more_bits(i, BLOCK_COUNT) else q4
        out += [
            (f"blk.{i}.attn_norm.weight", (emb,), f32),
            (f"blk.{i}.attn_q.weight", (emb, emb), q4),
            (f"blk.{i}.attn_k.weight", (kv, emb), q4),
            (f"blk.{i}.attn_v.weight", (kv, emb), more),
            (f"blk.{i}.attn_output.weight", (emb, emb), q4),
            (f"blk.{i}.ffn_norm.weight", (emb,), f32),
            (f"blk.{i}.ffn_gate.weight", (ffn, emb), q4),
            (f"blk.{i}.ffn_up.weight", (ffn, emb), q4),
            (f"blk.{i}.ffn_down.weight", (emb, ffn), more),
        ]
    return out


def _nbytes(shape: tuple[int, ...], qtype: gguf.GGMLQuantizationType) -> int:
    block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    elements = int(np.prod(shape))
    assert elements % block == 0
    return elements // block * type_size


def make_llama3_8b_header(path: Path) -> tuple[int, int]:
    """Write the file; return (header bytes, file size). The tensor data is a sparse hole."""
    tokens, scores, types, merges = _vocabulary()
    writer = gguf.GGUFWriter(path, ARCH)
    try:
        writer.add_name(NAME)
        writer.add_type("model")
        writer.add_size_label("8B")
        writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_K_M)
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        writer.add_block_count(BLOCK_COUNT)
        writer.add_context_length(CONTEXT_LENGTH)
        writer.add_embedding_length(EMBEDDING_LENGTH)
        writer.add_feed_forward_length(FEED_FORWARD_LENGTH)
        writer.add_head_count(HEAD_COUNT)
        writer.add_head_count_kv(HEAD_COUNT_KV)
        writer.add_rope_freq_base(ROPE_FREQ_BASE)
        writer.add_layer_norm_rms_eps(RMS_EPSILON)
        writer.add_vocab_size(VOCAB_SIZE)
        writer.add_rope_dimension_count(HEAD_DIM)
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre("llama-bpe")
        writer.add_token_list(tokens)
        writer.add_token_scores(scores)
        writer.add_token_types(types)
        writer.add_token_merges(merges)
        writer.add_bos_token_id(BOS_ID)
        writer.add_eos_token_id(EOS_ID)
        writer.add_chat_template(CHAT_TEMPLATE)
        data_size = 0
        for name, shape, qtype in tensor_infos():
            nbytes = _nbytes(shape, qtype)
            # With raw_dtype and a non-uint8 dtype the writer takes `shape` as elements.
            writer.add_tensor_info(name, shape, np.dtype(np.float32), nbytes, raw_dtype=qtype)
            data_size += gguf.GGUFWriter.ggml_pad(nbytes, writer.data_alignment)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
    finally:
        writer.close()
    header = path.stat().st_size
    data_start = gguf.GGUFWriter.ggml_pad(header, gguf.GGUF_DEFAULT_ALIGNMENT)
    os.truncate(path, data_start + data_size)  # Sparse: no data blocks are written.
    return header, data_start + data_size


# -- the two parsers ---------------------------------------------------------------------
#: hive's parser, `count` times in a child interpreter of the tree measured, each after a
#: gc.collect() and its result freed after the clock stops; then, with `peak`, the Python
#: heap peak (tracemalloc) of one more parse. Imports excluded.
_HIVE_TIMED = """
import gc, json, sys, time, tracemalloc
from pathlib import Path
from hive.observers.gguf import read_gguf_facts

path, count, peak = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "peak"
seconds = []
for _ in range(count):
    gc.collect()
    t0 = time.perf_counter()
    result = read_gguf_facts(path)
    seconds.append(time.perf_counter() - t0)
    del result
traced = None
if peak:
    gc.collect()
    tracemalloc.start()
    result = read_gguf_facts(path)
    traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
print(json.dumps({"seconds": seconds, "peak": traced}))
"""


def hive_timed(tree: Tree, path: Path, count: int, *, peak: bool = False) -> dict[str, Any]:
    result: dict[str, Any] = run_in_tree(
        tree, ["-c", _HIVE_TIMED, str(path), str(count), "peak" if peak else "-"], timeout=600
    )
    return result


def reader_parse(path: Path) -> gguf.GGUFReader:
    return gguf.GGUFReader(path)


def _timed(fn: Callable[[Path], Any], path: Path) -> float:
    """Seconds for one call; the result is freed after the clock stops."""
    gc.collect()
    t0 = time.perf_counter()
    result = fn(path)
    elapsed = time.perf_counter() - t0
    del result
    return elapsed


_CHILD = """
import json, sys
from pathlib import Path
import gguf
from hive.observers.gguf import read_gguf_facts

def kb(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))

which, path = sys.argv[1], Path(sys.argv[2])
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # Resets VmHWM (peak RSS) to the current RSS.
before = kb("VmRSS")
if which == "hive":
    facts = read_gguf_facts(path).model_dump()
else:
    r = gguf.GGUFReader(path)
    facts = {
        "architecture": r.fields["general.architecture"].contents(),
        "fields": len(r.fields),
        "tensors": len(r.tensors),
        "tokens": len(r.fields["tokenizer.ggml.tokens"].data),
        "merges": len(r.fields["tokenizer.ggml.merges"].data),
        "parameters": sum(int(t.n_elements) for t in r.tensors),
        "data_offset": int(r.data_offset),
    }
print(json.dumps({"rss_growth": (kb("VmHWM") - before) * 1024, "facts": facts}))
"""


def _in_child(which: str, path: Path, tree: Tree) -> tuple[int, dict[str, Any]]:
    """One parse in a fresh interpreter (both modules imported first): the growth of its peak
    RSS over the parse (mapped file pages it touched included), and what it read."""
    data = run_in_tree(tree, ["-c", _CHILD, which, str(path)], timeout=600)
    return int(data["rss_growth"]), data["facts"]


def _check(facts: dict[str, Any], peer: dict[str, Any], path: Path) -> None:
    log(f"B2: hive read_gguf_facts: {facts}")
    log(f"B2: gguf.GGUFReader: {peer}")
    expected: dict[str, Any] = {
        "architecture": "llama",
        "name": NAME,
        "block_count": BLOCK_COUNT,
        "context_length": CONTEXT_LENGTH,
        "embedding_length": EMBEDDING_LENGTH,
        "tensor_count": 291,
        "file_type": 15,
        "quantization": "Q4_K_M",
        "parameter_count": EXPECTED_PARAMETERS,
        "parameter_count_label": "8.0B",
        "kv_count": peer["fields"] - 3,  # GGUFReader adds GGUF.version and the two counts.
    }
    problems = [
        f"hive {key} = {facts.get(key)!r}, expected {want!r}"
        for key, want in expected.items()
        if facts.get(key) != want
    ]
    expected_peer: dict[str, Any] = {
        "architecture": "llama",
        "tensors": 291,
        "tokens": VOCAB_SIZE,
        "merges": MERGES,
        "parameters": EXPECTED_PARAMETERS,
    }
    problems += [
        f"GGUFReader {key} = {peer.get(key)!r}, expected {want!r}"
        for key, want in expected_peer.items()
        if peer.get(key) != want
    ]
    if problems:
        raise RuntimeError(f"B2: {path.name} is not read as expected: " + "; ".join(problems))


def run(*, quick: bool, tree: Tree) -> list[Row]:
    rounds = 2 if quick else 5  # one GGUFReader parse per round
    hive_per_round = 4
    ms, mb = 1000.0, 1e6
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="hive-bench-b2-") as tmp:
        path = Path(tmp) / "llama-3-8b-q4_k_m-header.gguf"
        t0 = time.monotonic()
        header, size = make_llama3_8b_header(path)
        disk = path.stat().st_blocks * 512
        log(
            f"B2: wrote {path.name} in {time.monotonic() - t0:.1f} s: header {header / mb:.2f} MB,"
            f" declared size {size / 1e9:.2f} GB, {disk / mb:.2f} MB on disk"
        )
        hive_rss, facts = _in_child("hive", path, tree)
        reader_rss, peer = _in_child("reader", path, tree)
        _check(facts, peer, path)

        hive_s: list[float] = []
        reader_s: list[float] = []
        log(f"B2: timing {rounds} GGUFReader and {rounds * hive_per_round} hive parses")
        hive_peak = 0
        for r in range(rounds):
            reader_s.append(_timed(reader_parse, path))
            timed = hive_timed(tree, path, hive_per_round, peak=r == rounds - 1)
            hive_s += timed["seconds"]
            hive_peak = timed["peak"] or hive_peak
        log("B2: hive, ms in order: " + " ".join(f"{t * 1000:.0f}" for t in hive_s))
        log("B2: GGUFReader, s in order: " + " ".join(f"{t:.1f}" for t in reader_s))

    hive_med, reader_med = statistics.median(hive_s), statistics.median(reader_s)
    common = {"bench": BENCH, "peer": PEER}
    rows += [
        Row(
            **common,
            metric=f"parse Llama-3-8B Q4_K_M header, median (n={len(hive_s)} / {len(reader_s)})",
            value=hive_med * ms,
            unit="ms",
            peer_value=reader_med * ms,
            goal="< 200 ms, >= 30x",
        ),
        Row(
            **common,
            metric="parse Llama-3-8B Q4_K_M header, min",
            value=min(hive_s) * ms,
            unit="ms",
            peer_value=min(reader_s) * ms,
        ),
        Row(
            **common,
            metric="parse Llama-3-8B Q4_K_M header, max",
            value=max(hive_s) * ms,
            unit="ms",
            peer_value=max(reader_s) * ms,
        ),
        Row(
            bench=BENCH,
            metric="Python heap peak during one parse (tracemalloc)",
            value=hive_peak / mb,
            unit="MB",
        ),
        Row(
            **common,
            metric="peak RSS growth over one parse (fresh process, VmHWM)",
            value=hive_rss / mb,
            unit="MB",
            peer_value=reader_rss / mb,
        ),
        Row(
            bench=BENCH,
            metric=f"file: header {header / mb:.1f} MB, declared {size / 1e9:.2f} GB, on disk",
            value=disk / mb,
            unit="MB",
        ),
    ]
    return rows
