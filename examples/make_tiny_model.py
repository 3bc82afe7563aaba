"""Write a tiny but real llama-architecture GGUF model for tests and demos.

Sits before everything else: its output is the model that hive's tests load, observe and serve.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import gguf
import numpy as np

NAME = "hive-tiny-llama"
ARCH = "llama"
EMBEDDING_LENGTH = 64
BLOCK_COUNT = 2
HEAD_COUNT = 4
HEAD_COUNT_KV = 2
HEAD_DIM = EMBEDDING_LENGTH // HEAD_COUNT
FEED_FORWARD_LENGTH = 128
CONTEXT_LENGTH = 256
RMS_EPSILON = 1e-5
WEIGHT_SCALE = 0.02

UNK_ID = 0
BOS_ID = 1
EOS_ID = 2

_WORD_TEXT = (
    "the of and to in is was for on that with as by at it from he his an be this are "
    "or which have not had one were but has they all their been we there when who "
    "more can time some into its new other so would them do than first model hive "
    "serve token llama tiny test hello world day year people way man two may up out"
)
_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _vocabulary() -> tuple[list[str], list[float], list[int]]:
    """Tokens, scores and token types of a SentencePiece-style (`llama`) vocabulary."""
    tokens = ["<unk>", "<s>", "</s>"]
    scores = [0.0, 0.0, 0.0]
    types = [
        int(gguf.TokenType.UNKNOWN),
        int(gguf.TokenType.CONTROL),
        int(gguf.TokenType.CONTROL),
    ]
    for byte in range(256):
        tokens.append(f"<0x{byte:02X}>")
        scores.append(0.0)
        types.append(int(gguf.TokenType.BYTE))
    # SentencePiece merges pairs of pieces, so every prefix of a word must be a piece too.
    pieces = ["▁", *_LETTERS]
    pieces += [f"▁{w[:n]}" for w in _WORD_TEXT.split() for n in range(1, len(w) + 1)]
    seen: set[str] = set()
    for piece in pieces:
        if piece in seen:
            continue
        seen.add(piece)
        tokens.append(piece)
        # Longer pieces score higher, so the SentencePiece merge prefers whole words.
        scores.append(-1000.0 + float(len(piece)) - len(tokens) * 1e-3)
        types.append(int(gguf.TokenType.NORMAL))
    return tokens, scores, types


def _tensors(*, vocab_size: int, seed: int) -> list[tuple[str, np.ndarray]]:
    """All llama tensors in numpy shape order (the reverse of ggml's `ne` order)."""
    rng = np.random.default_rng(seed)

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * WEIGHT_SCALE).astype(np.float32)

    def norm() -> np.ndarray:
        return np.ones(EMBEDDING_LENGTH, dtype=np.float32)

    kv_width = HEAD_DIM * HEAD_COUNT_KV
    out: list[tuple[str, np.ndarray]] = [
        ("token_embd.weight", weight(vocab_size, EMBEDDING_LENGTH)),
    ]
    for i in range(BLOCK_COUNT):
        out += [
            (f"blk.{i}.attn_norm.weight", norm()),
            (f"blk.{i}.attn_q.weight", weight(HEAD_DIM * HEAD_COUNT, EMBEDDING_LENGTH)),
            (f"blk.{i}.attn_k.weight", weight(kv_width, EMBEDDING_LENGTH)),
            (f"blk.{i}.attn_v.weight", weight(kv_width, EMBEDDING_LENGTH)),
            (f"blk.{i}.attn_output.weight", weight(EMBEDDING_LENGTH, HEAD_DIM * HEAD_COUNT)),
            (f"blk.{i}.ffn_norm.weight", norm()),
            (f"blk.{i}.ffn_gate.weight", weight(FEED_FORWARD_LENGTH, EMBEDDING_LENGTH)),
            (f"blk.{i}.ffn_down.weight", weight(EMBEDDING_LENGTH, FEED_FORWARD_LENGTH)),
            (f"blk.{i}.ffn_up.weight", weight(FEED_FORWARD_LENGTH, EMBEDDING_LENGTH)),
        ]
    out += [
        ("output_norm.weight", norm()),
        ("output.weight", weight(vocab_size, EMBEDDING_LENGTH)),
    ]
    return out


def make_tiny_model(path: pathlib.Path, *, seed: int = 0) -> pathlib.Path:
    """Write the tiny model to `path` (parents created) and return the path.

    The bytes depend only on `seed`: the same seed always gives the same file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tokens, scores, types = _vocabulary()
    writer = gguf.GGUFWriter(path, ARCH)
    try:
        writer.add_name(NAME)
        writer.add_file_type(gguf.LlamaFileType.ALL_F32)
        writer.add_vocab_size(len(tokens))
        writer.add_context_length(CONTEXT_LENGTH)
        writer.add_embedding_length(EMBEDDING_LENGTH)
        writer.add_block_count(BLOCK_COUNT)
        writer.add_feed_forward_length(FEED_FORWARD_LENGTH)
        writer.add_head_count(HEAD_COUNT)
        writer.add_head_count_kv(HEAD_COUNT_KV)
        writer.add_rope_dimension_count(HEAD_DIM)
        writer.add_layer_norm_rms_eps(RMS_EPSILON)
        writer.add_tokenizer_model("llama")
        writer.add_token_list(tokens)
        writer.add_token_scores(scores)
        writer.add_token_types(types)
        writer.add_bos_token_id(BOS_ID)
        writer.add_eos_token_id(EOS_ID)
        writer.add_unk_token_id(UNK_ID)
        writer.add_add_bos_token(True)
        writer.add_add_eos_token(False)
        for name, tensor in _tensors(vocab_size=len(tokens), seed=seed):
            writer.add_tensor(name, tensor)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=pathlib.Path, help="where to write the .gguf file")
    parser.add_argument("--seed", type=int, default=0, help="RNG seed for the weights")
    args = parser.parse_args(argv)
    path = make_tiny_model(args.out, seed=args.seed)
    print(f"{path} {path.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
