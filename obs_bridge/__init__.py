"""The bridge between OBS, cameras, chat and the daemon. Never imports torch."""
