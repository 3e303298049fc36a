from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PixelFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PIXEL_FORMAT_UNSPECIFIED: _ClassVar[PixelFormat]
    RGB24: _ClassVar[PixelFormat]
    NV12: _ClassVar[PixelFormat]
    I420: _ClassVar[PixelFormat]
    JPEG: _ClassVar[PixelFormat]

class DropPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DROP_POLICY_UNSPECIFIED: _ClassVar[DropPolicy]
    LATEST: _ClassVar[DropPolicy]
    BLOCK: _ClassVar[DropPolicy]

class PromptMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PROMPT_MODE_UNSPECIFIED: _ClassVar[PromptMode]
    CUT: _ClassVar[PromptMode]
    RECACHE: _ClassVar[PromptMode]
    TRANSITION: _ClassVar[PromptMode]

class Interpolation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INTERPOLATION_UNSPECIFIED: _ClassVar[Interpolation]
    LERP: _ClassVar[Interpolation]
    SLERP: _ClassVar[Interpolation]
PIXEL_FORMAT_UNSPECIFIED: PixelFormat
RGB24: PixelFormat
NV12: PixelFormat
I420: PixelFormat
JPEG: PixelFormat
DROP_POLICY_UNSPECIFIED: DropPolicy
LATEST: DropPolicy
BLOCK: DropPolicy
PROMPT_MODE_UNSPECIFIED: PromptMode
CUT: PromptMode
RECACHE: PromptMode
TRANSITION: PromptMode
INTERPOLATION_UNSPECIFIED: Interpolation
LERP: Interpolation
SLERP: Interpolation

class WeightedPrompt(_message.Message):
    __slots__ = ("text", "weight")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    text: str
    weight: float
    def __init__(self, text: _Optional[str] = ..., weight: _Optional[float] = ...) -> None: ...

class PromptSpec(_message.Message):
    __slots__ = ("prompts", "mode", "transition_frames", "interpolation", "origin")
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    TRANSITION_FRAMES_FIELD_NUMBER: _ClassVar[int]
    INTERPOLATION_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    prompts: _containers.RepeatedCompositeFieldContainer[WeightedPrompt]
    mode: PromptMode
    transition_frames: int
    interpolation: Interpolation
    origin: str
    def __init__(self, prompts: _Optional[_Iterable[_Union[WeightedPrompt, _Mapping]]] = ..., mode: _Optional[_Union[PromptMode, str]] = ..., transition_frames: _Optional[int] = ..., interpolation: _Optional[_Union[Interpolation, str]] = ..., origin: _Optional[str] = ...) -> None: ...

class SessionSettings(_message.Message):
    __slots__ = ("name", "width", "height", "input_format", "output_format", "fps", "prompt", "strength", "seed", "drop_policy", "jpeg_quality")
    NAME_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    INPUT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    STRENGTH_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    DROP_POLICY_FIELD_NUMBER: _ClassVar[int]
    JPEG_QUALITY_FIELD_NUMBER: _ClassVar[int]
    name: str
    width: int
    height: int
    input_format: PixelFormat
    output_format: PixelFormat
    fps: float
    prompt: PromptSpec
    strength: float
    seed: int
    drop_policy: DropPolicy
    jpeg_quality: int
    def __init__(self, name: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., input_format: _Optional[_Union[PixelFormat, str]] = ..., output_format: _Optional[_Union[PixelFormat, str]] = ..., fps: _Optional[float] = ..., prompt: _Optional[_Union[PromptSpec, _Mapping]] = ..., strength: _Optional[float] = ..., seed: _Optional[int] = ..., drop_policy: _Optional[_Union[DropPolicy, str]] = ..., jpeg_quality: _Optional[int] = ...) -> None: ...

class InputFrame(_message.Message):
    __slots__ = ("seq", "capture_time_ns", "data")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_TIME_NS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    seq: int
    capture_time_ns: int
    data: bytes
    def __init__(self, seq: _Optional[int] = ..., capture_time_ns: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class StreamRequest(_message.Message):
    __slots__ = ("open", "frame", "prompt", "update")
    OPEN_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    open: SessionSettings
    frame: InputFrame
    prompt: PromptSpec
    update: SessionUpdate
    def __init__(self, open: _Optional[_Union[SessionSettings, _Mapping]] = ..., frame: _Optional[_Union[InputFrame, _Mapping]] = ..., prompt: _Optional[_Union[PromptSpec, _Mapping]] = ..., update: _Optional[_Union[SessionUpdate, _Mapping]] = ...) -> None: ...

class StageTimings(_message.Message):
    __slots__ = ("decode_us", "queue_us", "model_us", "encode_us", "total_us", "batch_size")
    DECODE_US_FIELD_NUMBER: _ClassVar[int]
    QUEUE_US_FIELD_NUMBER: _ClassVar[int]
    MODEL_US_FIELD_NUMBER: _ClassVar[int]
    ENCODE_US_FIELD_NUMBER: _ClassVar[int]
    TOTAL_US_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    decode_us: int
    queue_us: int
    model_us: int
    encode_us: int
    total_us: int
    batch_size: int
    def __init__(self, decode_us: _Optional[int] = ..., queue_us: _Optional[int] = ..., model_us: _Optional[int] = ..., encode_us: _Optional[int] = ..., total_us: _Optional[int] = ..., batch_size: _Optional[int] = ...) -> None: ...

class OutputFrame(_message.Message):
    __slots__ = ("seq", "capture_time_ns", "format", "width", "height", "data", "timings", "dropped_total")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_TIME_NS_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    DROPPED_TOTAL_FIELD_NUMBER: _ClassVar[int]
    seq: int
    capture_time_ns: int
    format: PixelFormat
    width: int
    height: int
    data: bytes
    timings: StageTimings
    dropped_total: int
    def __init__(self, seq: _Optional[int] = ..., capture_time_ns: _Optional[int] = ..., format: _Optional[_Union[PixelFormat, str]] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., data: _Optional[bytes] = ..., timings: _Optional[_Union[StageTimings, _Mapping]] = ..., dropped_total: _Optional[int] = ...) -> None: ...

class SessionOpened(_message.Message):
    __slots__ = ("session_id", "pipeline", "device")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    pipeline: str
    device: str
    def __init__(self, session_id: _Optional[str] = ..., pipeline: _Optional[str] = ..., device: _Optional[str] = ...) -> None: ...

class StreamResponse(_message.Message):
    __slots__ = ("opened", "frame")
    OPENED_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    opened: SessionOpened
    frame: OutputFrame
    def __init__(self, opened: _Optional[_Union[SessionOpened, _Mapping]] = ..., frame: _Optional[_Union[OutputFrame, _Mapping]] = ...) -> None: ...

class SessionRef(_message.Message):
    __slots__ = ("id", "name")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class SetPromptRequest(_message.Message):
    __slots__ = ("session", "prompt")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    session: SessionRef
    prompt: PromptSpec
    def __init__(self, session: _Optional[_Union[SessionRef, _Mapping]] = ..., prompt: _Optional[_Union[PromptSpec, _Mapping]] = ...) -> None: ...

class SetPromptResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SessionUpdate(_message.Message):
    __slots__ = ("strength", "seed", "enabled", "reset", "origin")
    STRENGTH_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    RESET_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    strength: float
    seed: int
    enabled: bool
    reset: bool
    origin: str
    def __init__(self, strength: _Optional[float] = ..., seed: _Optional[int] = ..., enabled: _Optional[bool] = ..., reset: _Optional[bool] = ..., origin: _Optional[str] = ...) -> None: ...

class UpdateSessionRequest(_message.Message):
    __slots__ = ("session", "update")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    session: SessionRef
    update: SessionUpdate
    def __init__(self, session: _Optional[_Union[SessionRef, _Mapping]] = ..., update: _Optional[_Union[SessionUpdate, _Mapping]] = ...) -> None: ...

class UpdateSessionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Style(_message.Message):
    __slots__ = ("name", "prompt", "description")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    prompt: str
    description: str
    def __init__(self, name: _Optional[str] = ..., prompt: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class ListStylesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListStylesResponse(_message.Message):
    __slots__ = ("styles",)
    STYLES_FIELD_NUMBER: _ClassVar[int]
    styles: _containers.RepeatedCompositeFieldContainer[Style]
    def __init__(self, styles: _Optional[_Iterable[_Union[Style, _Mapping]]] = ...) -> None: ...

class Preset(_message.Message):
    __slots__ = ("name", "description")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class ListPresetsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListPresetsResponse(_message.Message):
    __slots__ = ("presets",)
    PRESETS_FIELD_NUMBER: _ClassVar[int]
    presets: _containers.RepeatedCompositeFieldContainer[Preset]
    def __init__(self, presets: _Optional[_Iterable[_Union[Preset, _Mapping]]] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SessionStatus(_message.Message):
    __slots__ = ("id", "name", "width", "height", "fps_in", "fps_out", "latency_p50_ms", "latency_p99_ms", "frames_in", "frames_out", "dropped", "prompt", "enabled", "strength", "activity")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    FPS_IN_FIELD_NUMBER: _ClassVar[int]
    FPS_OUT_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P50_MS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P99_MS_FIELD_NUMBER: _ClassVar[int]
    FRAMES_IN_FIELD_NUMBER: _ClassVar[int]
    FRAMES_OUT_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    STRENGTH_FIELD_NUMBER: _ClassVar[int]
    ACTIVITY_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    width: int
    height: int
    fps_in: float
    fps_out: float
    latency_p50_ms: float
    latency_p99_ms: float
    frames_in: int
    frames_out: int
    dropped: int
    prompt: _containers.RepeatedCompositeFieldContainer[WeightedPrompt]
    enabled: bool
    strength: float
    activity: _containers.RepeatedCompositeFieldContainer[Activity]
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., fps_in: _Optional[float] = ..., fps_out: _Optional[float] = ..., latency_p50_ms: _Optional[float] = ..., latency_p99_ms: _Optional[float] = ..., frames_in: _Optional[int] = ..., frames_out: _Optional[int] = ..., dropped: _Optional[int] = ..., prompt: _Optional[_Iterable[_Union[WeightedPrompt, _Mapping]]] = ..., enabled: _Optional[bool] = ..., strength: _Optional[float] = ..., activity: _Optional[_Iterable[_Union[Activity, _Mapping]]] = ...) -> None: ...

class Activity(_message.Message):
    __slots__ = ("time_unix", "origin", "action")
    TIME_UNIX_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    time_unix: float
    origin: str
    action: str
    def __init__(self, time_unix: _Optional[float] = ..., origin: _Optional[str] = ..., action: _Optional[str] = ...) -> None: ...

class GetStatusResponse(_message.Message):
    __slots__ = ("pipeline", "device", "model_note", "uptime_s", "sessions", "version")
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    MODEL_NOTE_FIELD_NUMBER: _ClassVar[int]
    UPTIME_S_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    pipeline: str
    device: str
    model_note: str
    uptime_s: float
    sessions: _containers.RepeatedCompositeFieldContainer[SessionStatus]
    version: str
    def __init__(self, pipeline: _Optional[str] = ..., device: _Optional[str] = ..., model_note: _Optional[str] = ..., uptime_s: _Optional[float] = ..., sessions: _Optional[_Iterable[_Union[SessionStatus, _Mapping]]] = ..., version: _Optional[str] = ...) -> None: ...
