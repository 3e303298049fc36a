"""Bad input gets a clear status; other sessions keep streaming; no session leaks."""
from __future__ import annotations

import threading

import grpc
import numpy as np
import pytest

from helpers.daemons import Streamer, address_of, frames, wait_until
from morphcam.daemon.client import DaemonClient, DaemonError, StreamSettings
from morphcam.protos.v1 import morphcam_pb2 as pb


def _open(**kw) -> pb.StreamRequest:
    kw.setdefault("width", 64)
    kw.setdefault("height", 48)
    return pb.StreamRequest(open=pb.SessionSettings(**kw))


def _frame(data: bytes, seq: int = 0) -> pb.StreamRequest:
    return pb.StreamRequest(frame=pb.InputFrame(seq=seq, data=data))


def _held(*requests: pb.StreamRequest):
    """Requests, then the stream stays open (as a live client's does) until the call ends."""
    yield from requests
    threading.Event().wait(10)


def _jpeg() -> bytes:
    from morphcam.daemon.frames import encode

    return encode(frames(1)[0], "jpeg")


GOOD = frames(1)[0].tobytes()
CASES = {
    "wrong size": ([_open(), _frame(frames(1, 32, 32)[0].tobytes())], grpc.StatusCode.INVALID_ARGUMENT, "must be 9216 bytes"),
    "truncated bytes": ([_open(), _frame(GOOD[:-100])], grpc.StatusCode.INVALID_ARGUMENT, "got 9116"),
    "wrong format": ([_open(input_format=pb.NV12), _frame(GOOD)], grpc.StatusCode.INVALID_ARGUMENT, "nv12 frame"),
    "corrupt jpeg": ([_open(input_format=pb.JPEG), _frame(b"\xff\xd8" + bytes(500))], grpc.StatusCode.INVALID_ARGUMENT, "corrupt JPEG"),
    "truncated jpeg": ([_open(input_format=pb.JPEG), _frame(_jpeg()[:300])], grpc.StatusCode.INVALID_ARGUMENT, "corrupt JPEG"),
    "not a jpeg": ([_open(input_format=pb.JPEG), _frame(GOOD)], grpc.StatusCode.INVALID_ARGUMENT, "not a JPEG"),
    "jpeg of another size": ([_open(width=32, height=32, input_format=pb.JPEG), _frame(_jpeg())],
                             grpc.StatusCode.INVALID_ARGUMENT, "the session is 32x32"),
    "no open": ([_frame(GOOD)], grpc.StatusCode.INVALID_ARGUMENT, "first message of a stream must be `open`"),
    "open twice": ([_open(), _open()], grpc.StatusCode.INVALID_ARGUMENT, "opened only once"),
    "no size": ([_open(width=0)], grpc.StatusCode.INVALID_ARGUMENT, "width and height are required"),
    "odd nv12": ([_open(width=63, input_format=pb.NV12)], grpc.StatusCode.INVALID_ARGUMENT, "even width"),
    "too large": ([_open(width=100000, height=100000)], grpc.StatusCode.INVALID_ARGUMENT, "larger than this daemon's limit"),
    "huge prompt": ([_open(prompt=pb.PromptSpec(prompts=[pb.WeightedPrompt(text="x" * 100_000)]))],
                    grpc.StatusCode.INVALID_ARGUMENT, "100000 characters is too long"),
    "empty prompt": ([_open(), pb.StreamRequest(prompt=pb.PromptSpec(prompts=[pb.WeightedPrompt(text="  ")]))],
                     grpc.StatusCode.INVALID_ARGUMENT, "must not be empty"),
    "five prompts": ([_open(), pb.StreamRequest(prompt=pb.PromptSpec(prompts=[pb.WeightedPrompt(text="a")] * 5))],
                     grpc.StatusCode.INVALID_ARGUMENT, "1 to 4 prompts"),
    "transition of 0 frames": ([_open(), pb.StreamRequest(prompt=pb.PromptSpec(
        prompts=[pb.WeightedPrompt(text="a")], mode=pb.TRANSITION))], grpc.StatusCode.INVALID_ARGUMENT, "transition_frames"),
    "negative weight": ([_open(prompt=pb.PromptSpec(prompts=[pb.WeightedPrompt(text="a", weight=-1)]))],
                        grpc.StatusCode.INVALID_ARGUMENT, "weights must be > 0"),
    "strength out of range": ([_open(strength=3)], grpc.StatusCode.INVALID_ARGUMENT, "strength must be within"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_stream_input(start_daemon, case):
    requests, code, text = CASES[case]
    daemon = start_daemon()
    bystander = Streamer(daemon.address)
    bystander.start()
    try:
        assert wait_until(lambda: bystander.outputs > 0)
        with DaemonClient(daemon.daemon.addresses[1]) as client:
            with pytest.raises(grpc.RpcError) as info:
                list(client.open_stream(iter(requests)))
        assert info.value.code() == code
        assert text in info.value.details()
        before = bystander.outputs
        assert wait_until(lambda: bystander.outputs > before + 3), "the other session must keep streaming"
    finally:
        bystander.stop()
    assert wait_until(lambda: daemon.session_count() == 0)


def test_100_mb_message_is_refused(start_daemon, transport):
    daemon = start_daemon()
    bystander = Streamer(daemon.address)
    bystander.start()
    try:
        assert wait_until(lambda: bystander.outputs > 0)
        with DaemonClient(address_of(daemon, transport), max_message_mb=200) as client:
            with pytest.raises(grpc.RpcError) as info:
                list(client.open_stream(iter([_open(), _frame(bytes(100 * 1024 * 1024))])))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "larger than max" in info.value.details()
        before = bystander.outputs
        assert wait_until(lambda: bystander.outputs > before + 3)
    finally:
        bystander.stop()
    assert wait_until(lambda: daemon.session_count() == 0)


def test_unknown_session(start_daemon):
    daemon = start_daemon()
    with DaemonClient(daemon.address) as client:
        with pytest.raises(DaemonError) as info:
            client.set_prompt("nobody", "sketch")
        assert info.value.code == grpc.StatusCode.NOT_FOUND and "no live session name 'nobody'" in info.value.message
        with pytest.raises(DaemonError) as info:
            client.update_session("0123456789ab", enabled=False)
        assert info.value.code == grpc.StatusCode.NOT_FOUND


def test_prompt_of_100000_characters_via_set_prompt(start_daemon):
    daemon = start_daemon()
    with DaemonClient(daemon.address) as client:
        stream = client.open_stream(_held(_open(name="cam"), _frame(GOOD)))
        assert next(stream).WhichOneof("kind") == "opened"
        with pytest.raises(DaemonError) as info:
            client.set_prompt("cam", "y" * 100_000)
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT and "the limit is 2000" in info.value.message
        stream.cancel()
    assert wait_until(lambda: daemon.session_count() == 0)


def test_session_limit_and_duplicate_name(start_daemon):
    daemon = start_daemon(max_sessions=1)
    with DaemonClient(daemon.address) as client:
        first = client.open_stream(_held(_open(name="cam"), _frame(GOOD)))
        assert next(first).WhichOneof("kind") == "opened"
        with pytest.raises(grpc.RpcError) as info:
            list(client.open_stream(iter([_open(name="other")])))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "max_sessions" in info.value.details()
        first.cancel()
    assert wait_until(lambda: daemon.session_count() == 0)
    daemon2 = start_daemon(unix_socket="", address="127.0.0.1:0")
    with DaemonClient(daemon2.address) as client:
        first = client.open_stream(_held(_open(name="cam"), _frame(GOOD)))
        assert next(first).WhichOneof("kind") == "opened"
        with pytest.raises(grpc.RpcError) as info:
            list(client.open_stream(iter([_open(name="cam")])))
        assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS
        first.cancel()


def test_remote_calls_need_the_token(start_daemon):
    daemon = start_daemon(token="s3cret")
    tcp = daemon.daemon.addresses[1]
    with DaemonClient(tcp) as client:
        with pytest.raises(DaemonError) as info:
            client.status()
        assert info.value.code == grpc.StatusCode.UNAUTHENTICATED and "Bearer" in info.value.message
        with pytest.raises(DaemonError) as info:
            list(client.transform(StreamSettings(64, 48), frames(2)))
        assert info.value.code == grpc.StatusCode.UNAUTHENTICATED
    with DaemonClient(tcp, token="wrong") as client:
        with pytest.raises(DaemonError):
            client.status()
    with DaemonClient(tcp, token="s3cret") as client:
        assert len(list(client.transform(StreamSettings(64, 48), frames(2)))) == 2
    with DaemonClient(daemon.address) as client:  # the unix socket is this user's alone: no token needed
        assert client.status().pipeline == "passthrough"
    with grpc.insecure_channel(tcp) as channel:  # health stays open for supervisors
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        assert health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest()).status == 1
    assert wait_until(lambda: daemon.session_count() == 0)


def test_token_from_environment(start_daemon):
    daemon = start_daemon(environ={"MORPHCAM_TOKEN": "from-env"})
    with DaemonClient(daemon.daemon.addresses[1], token="from-env") as client:
        assert client.status().pipeline == "passthrough"
    with DaemonClient(daemon.daemon.addresses[1]) as client:
        with pytest.raises(DaemonError):
            client.status()
