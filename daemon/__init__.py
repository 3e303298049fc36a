"""The morphcam daemon: gRPC server, sessions, the batching worker, metrics and config.

Importing this package loads nothing heavy; the client, config and frames modules stay free of
torch so that the OBS bridge can use them.
"""
from importlib import metadata


def version() -> str:
    """The installed morphcam version."""
    try:
        return metadata.version("morphcam")
    except metadata.PackageNotFoundError:
        return "0+unknown"
