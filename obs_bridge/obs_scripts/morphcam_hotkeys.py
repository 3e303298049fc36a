"""morphcam hotkeys for OBS (Tools > Scripts).

Registers OBS hotkeys (Settings > Hotkeys, "morphcam: ...") and forwards each press to the
morphcam bridge as one small UDP datagram on localhost: {"v": 1, "action": "next_style"}.
obs-websocket sends no event for hotkey presses, so this script is how they reach the bridge.
Bindings are saved with the scene collection. Runs inside OBS's Python; imports only the
standard library and obspython.
"""
import json
import socket

import obspython as obs

DEFAULT_PORT = 47011
# (action, description): the hotkey is registered as "morphcam.<action>". Keep in step with
# morphcam.obs_bridge.control.ACTIONS.
ACTIONS = (
    ("next_style", "next style"),
    ("previous_style", "previous style"),
    *((f"style_{i}", f"style slot {i}") for i in range(1, 10)),
    ("effect_on", "effect on"),
    ("effect_off", "effect off"),
    ("effect_toggle", "effect on/off"),
    ("strength_up", "strength up"),
    ("strength_down", "strength down"),
)

_state = {"host": "127.0.0.1", "port": DEFAULT_PORT, "hotkeys": {}, "sock": None}


def script_description():
    return (
        "<b>morphcam hotkeys</b><br>Bind the morphcam actions in Settings &gt; Hotkeys. "
        "Presses go to the morphcam bridge on this computer (UDP port below; it must match "
        "[bridge.hotkeys] port in the morphcam config)."
    )


def script_properties():
    props = obs.obs_properties_create()
    obs.obs_properties_add_int(props, "port", "Bridge UDP port", 1, 65535, 1)
    return props


def script_defaults(settings):
    obs.obs_data_set_default_int(settings, "port", DEFAULT_PORT)


def script_update(settings):
    _state["port"] = obs.obs_data_get_int(settings, "port") or DEFAULT_PORT


def _send(action):
    try:
        if _state["sock"] is None:
            _state["sock"] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        message = json.dumps({"v": 1, "action": action}).encode()
        _state["sock"].sendto(message, (_state["host"], _state["port"]))
    except OSError as e:  # the bridge is not running: nothing to do, OBS must not notice
        print("morphcam: could not reach the bridge on port %d: %s" % (_state["port"], e))


def _callback(action):
    def on_hotkey(pressed):
        if pressed:  # key-down only; TriggerHotkeyByName also sends only key-down
            _send(action)

    return on_hotkey


def script_load(settings):
    script_update(settings)
    for action, description in ACTIONS:
        name = "morphcam." + action
        hotkey_id = obs.obs_hotkey_register_frontend(name, "morphcam: " + description, _callback(action))
        saved = obs.obs_data_get_array(settings, name)
        obs.obs_hotkey_load(hotkey_id, saved)
        obs.obs_data_array_release(saved)
        _state["hotkeys"][name] = hotkey_id
    print("morphcam: %d hotkeys registered, forwarding to 127.0.0.1:%d" % (len(ACTIONS), _state["port"]))


def script_save(settings):
    for name, hotkey_id in _state["hotkeys"].items():
        saved = obs.obs_hotkey_save(hotkey_id)
        obs.obs_data_set_array(settings, name, saved)
        obs.obs_data_array_release(saved)


def script_unload():
    if _state["sock"] is not None:
        _state["sock"].close()
        _state["sock"] = None
