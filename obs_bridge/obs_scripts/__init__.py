"""Scripts that run inside OBS (Tools > Scripts), shipped as files; not imported by morphcam.

``morphcam_hotkeys.py`` imports ``obspython``, which exists only inside OBS. Install it with
install/install-obs-script.sh (``python -m morphcam.obs_bridge.obs_script_install``).
"""
