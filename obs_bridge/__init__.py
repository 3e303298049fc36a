"""The bridge between OBS, cameras, chat and the daemon. Never imports torch.

- ``sources``: frames in (capture device, OBS's UDP MPEG-TS output, looping file), newest only.
- ``relay``: source -> daemon ``LiveStream`` -> sink, failing open to the original frames.
- ``sinks``: frames out (pyvirtualcam, UDP MPEG-TS into an OBS Media Source, file).
- ``control``: hotkey actions and commands, looked up in tables, driving a ``ControlTarget``.
- ``obs_ws`` / ``obs_control``: obs-websocket with obsws-python's faults wrapped; scenes and
  CustomEvents to prompts; the Media Source the bridge creates.
- ``hotkeys`` and ``obs_scripts/morphcam_hotkeys.py``: OBS hotkeys forwarded over localhost UDP.
- ``live`` (``morphcam live``), ``doctor`` (``morphcam doctor``), ``settings`` ([bridge], [obs]).
- ``chat``: Twitch chat control, plugged into the same ``ControlTarget``.
"""
