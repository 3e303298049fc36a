"""OBS drives the style: scene switches map to prompts, CustomEvents carry commands, and the
bridge's UDP output is shown in an OBS Media Source it creates itself.

CustomEvent commands (from a Stream Deck, a browser source, any obs-websocket client) are sent
with BroadcastCustomEvent and ``eventData`` such as ``{"morphcam": {"prompt": "oil painting"}}``;
see ``StyleController.on_command`` for every key.
"""
from __future__ import annotations

import logging
from typing import Any

from morphcam.obs_bridge.control import StyleController
from morphcam.obs_bridge.obs_ws import ObsConnection, ObsRequestError, ObsUnavailable, snake_case
from morphcam.obs_bridge.settings import MediaSourceSettings, ObsSettings

log = logging.getLogger(__name__)

# Media Source settings for a live MPEG-TS stream: no buffering, keep the last frame on a gap.
MEDIA_SOURCE_KIND = "ffmpeg_source"
OBS_BOUNDS_SCALE_INNER = "OBS_BOUNDS_SCALE_INNER"


def media_source_settings(url: str) -> dict[str, Any]:
    return {
        "is_local_file": False,
        "input": url,
        "input_format": "mpegts",
        "buffering_mb": 0,
        "reconnect_delay_sec": 1,
        "clear_on_media_end": False,
        "restart_on_activate": False,
        "close_when_inactive": False,
        "hw_decode": False,
    }


class ObsControl:
    """Connects ``ObsConnection`` events to a ``StyleController``. ``start()``/``stop()``."""

    def __init__(self, settings: ObsSettings, controller: StyleController) -> None:
        self.settings = settings
        self.controller = controller
        self.scene = ""
        self.events_handled = 0
        self.started_output = False  # we started OBS's Recording output, so we stop it again
        self.connection = ObsConnection(settings, on_event=self._on_event, on_connect=self._on_connect)
        self._handlers = {
            "CurrentProgramSceneChanged": self._scene_changed,
            "CustomEvent": self._custom_event,
            "ExitStarted": self._exit_started,
        }

    def start(self) -> "ObsControl":
        self.connection.start()
        return self

    def stop(self) -> None:
        if self.started_output:
            try:
                self.connection.request("StopRecord")
            except (ObsRequestError, ObsUnavailable) as e:
                log.info("could not stop OBS's Recording output: %s", e)
        self.connection.stop()

    def _on_event(self, event: str, data: dict[str, Any]) -> None:
        handler = self._handlers.get(event)
        if handler is not None:
            handler(data)
            self.events_handled += 1

    def _scene_changed(self, data: dict[str, Any]) -> None:
        self.scene = str(data.get("scene_name", ""))
        if self.controller.on_scene(self.scene):
            log.info("scene %r -> prompt %r", self.scene, self.controller.scene_prompts[self.scene])

    def _custom_event(self, data: dict[str, Any]) -> None:
        command = data.get(snake_case(self.settings.event_key))
        if command is None:
            return  # someone else's event
        try:
            self.controller.on_command(command)
        except (ValueError, TypeError, KeyError) as e:
            log.warning("ignored CustomEvent command %r: %s", command, e)

    def _exit_started(self, data: dict[str, Any]) -> None:
        log.info("OBS is exiting; the bridge keeps running and reconnects when OBS is back")

    def _on_connect(self, connection: ObsConnection) -> None:
        # The scene may have changed while we were away: apply the current one's prompt.
        self.scene = connection.request("GetCurrentProgramScene").get("currentProgramSceneName", "")
        self.controller.on_scene(self.scene)
        if self.settings.media_source.create:
            ensure_media_source(connection, self.settings.media_source, self.scene)
        if self.settings.start_output and not connection.request("GetRecordStatus").get("outputActive"):
            connection.request("StartRecord")
            self.started_output = True
            log.info("started OBS's Recording output (the bridge's UDP source)")


def ensure_media_source(connection: ObsConnection, media: MediaSourceSettings, current_scene: str) -> None:
    """Create the Media Source reading ``media.url`` (or point an existing one at it), scaled to the canvas."""
    scene = media.scene or current_scene
    settings = media_source_settings(media.url)
    inputs = connection.request("GetInputList", {"inputKind": MEDIA_SOURCE_KIND}).get("inputs", [])
    if any(i.get("inputName") == media.input_name for i in inputs):
        connection.request("SetInputSettings", {"inputName": media.input_name, "inputSettings": settings})
        log.info("OBS media source %r now reads %s", media.input_name, media.url)
        return
    created = connection.request(
        "CreateInput",
        {
            "sceneName": scene,
            "inputName": media.input_name,
            "inputKind": MEDIA_SOURCE_KIND,
            "inputSettings": settings,
            "sceneItemEnabled": True,
        },
    )
    video = connection.request("GetVideoSettings")
    transform = {
        "boundsType": OBS_BOUNDS_SCALE_INNER,
        "boundsWidth": float(video.get("baseWidth", 1920)),
        "boundsHeight": float(video.get("baseHeight", 1080)),
        "positionX": 0.0,
        "positionY": 0.0,
    }
    try:
        connection.request(
            "SetSceneItemTransform",
            {"sceneName": scene, "sceneItemId": created["sceneItemId"], "sceneItemTransform": transform},
        )
    except (ObsRequestError, ObsUnavailable, KeyError) as e:
        log.warning("could not fit the media source to the canvas: %s", e)
    log.info("created OBS media source %r in scene %r reading %s", media.input_name, scene, media.url)
