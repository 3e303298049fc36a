"""The generator: configs, frame autoencoder, causal DiT, KV ring cache, StreamGenerator, checkpoints.

Main entry points: ``ModelConfig.from_name``, ``load_model`` / ``load_checkpoint`` /
``save_checkpoint``, ``StreamGenerator`` (sessions, prompt control, ``step``).
"""
from .checkpoint import CheckpointError, load_checkpoint, load_model, save_checkpoint
from .config import ModelConfig
from .generator import StreamGenerator, StreamSession
from .kv_cache import KVRingCache
from .network import RestyleModel
from .text import TextEncoder

__all__ = [
    "CheckpointError",
    "KVRingCache",
    "ModelConfig",
    "RestyleModel",
    "StreamGenerator",
    "StreamSession",
    "TextEncoder",
    "load_checkpoint",
    "load_model",
    "save_checkpoint",
]
