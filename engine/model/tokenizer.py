"""Offline construction of small CLIP tokenizers (BPE over characters plus whole-word merges).

Used by the test kit and the demo world: the real ``CLIPTokenizer`` class, no download. Any
lowercase text tokenises (unknown words fall back to characters); listed words become one token.
"""
from __future__ import annotations

from collections.abc import Iterable

from transformers import CLIPTokenizer

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
_CHARS = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789.,'-!?:;()&/\"")


def build_word_tokenizer(words: Iterable[str], max_length: int = 77) -> CLIPTokenizer:
    """A CLIPTokenizer whose vocabulary holds every character (alone and word-final) and each of
    ``words`` (lowercase, no spaces) as a single token. ``max_length`` is the context length."""
    vocab: dict[str, int] = {}
    merges: list[tuple[str, str]] = []

    def add(tok: str) -> None:
        if tok not in vocab:
            vocab[tok] = len(vocab)

    for c in _CHARS:
        add(c)
    for c in _CHARS:
        add(c + "</w>")
    seen: set[tuple[str, str]] = set()
    for word in sorted(set(words)):
        if not word or not word.isalnum() or word != word.lower():
            raise ValueError(f"tokenizer words must be lowercase alphanumerics, got {word!r}")
        symbols = list(word[:-1]) + [word[-1] + "</w>"]
        cur = symbols[0]
        for s in symbols[1:]:
            if (cur, s) not in seen:
                merges.append((cur, s))
                seen.add((cur, s))
            cur = cur + s
            add(cur)
    add(BOS)
    add(EOS)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)
