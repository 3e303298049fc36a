"""The generator: configs, frame autoencoder, causal DiT, KV ring cache, StreamGenerator, training."""
