"""Text encoder: offline MiniLM, static shapes, LRU cache, limits."""
from __future__ import annotations

import pytest
import torch

from morphcam.model.text import MAX_PROMPT_CHARS, TextEncoder


def test_embedding_shapes_and_cache(text_encoder):
    e = text_encoder("a pencil sketch")
    assert e.pooled.shape == (384,) and e.tokens.shape == (text_encoder.text_tokens, 384)
    torch.testing.assert_close(e.pooled.norm(), torch.tensor(1.0))
    assert text_encoder("  a pencil sketch ") is e  # cached, after stripping
    near, far = text_encoder("a drawing in pencil"), text_encoder("heavy rain at night")
    assert float(e.pooled @ near.pooled) > float(e.pooled @ far.pooled)


def test_lru_is_bounded():
    enc = TextEncoder(text_tokens=8, cache_size=2)
    for text in ("one", "two", "three"):
        enc(text)
    assert list(enc._cache) == ["two", "three"]


def test_long_prompts_are_truncated_to_the_token_limit(text_encoder):
    words = " ".join(["watercolor"] * 60)
    assert torch.equal(text_encoder(words).tokens, text_encoder(words + " with neon edges").tokens)


@pytest.mark.parametrize("bad", ["", "   ", "x" * 10_000])
def test_bad_prompts_are_refused(text_encoder, bad):
    with pytest.raises(ValueError, match="empty|limit is"):
        text_encoder(bad)
    assert len("x" * MAX_PROMPT_CHARS) == MAX_PROMPT_CHARS
    text_encoder("y " * (MAX_PROMPT_CHARS // 2))  # at the limit: accepted, tokens truncated


def test_threads_can_embed_at_once(text_encoder):
    """A daemon embeds new prompts beside its frame loop: calls from several threads at once get
    what one thread alone gets, each text runs through MiniLM once, and nothing is raised."""
    import threading

    texts = [f"a threaded prompt number {i}" for i in range(6)]
    before = text_encoder.embedded
    results: dict[tuple[int, str], torch.Tensor] = {}
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            for text in texts[k % 2 :: 1]:  # overlapping sets, so threads race for the same texts
                results[(k, text)] = text_encoder(text).pooled
        except BaseException as exc:  # noqa: BLE001 - collected for the assert below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert text_encoder.embedded - before == len(texts)
    assert all(text_encoder.cached(t) for t in texts)
    alone = TextEncoder(text_tokens=text_encoder.text_tokens)
    for (k, text), pooled in results.items():
        torch.testing.assert_close(pooled, alone(text).pooled)
