"""The morphcam daemon: gRPC server, sessions, the batching worker, metrics and config.

Importing this package loads nothing heavy; the client and config modules stay free of torch
so that the OBS bridge can use them.
"""
