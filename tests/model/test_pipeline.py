"""GeneratorPipeline: the daemon's view of the generator, including bad input per slot."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from morphcam.daemon.generator_pipeline import GeneratorPipeline
from morphcam.daemon.pipeline import Pipeline, PromptChange, SessionParams, WeightedPrompt
from morphcam.model.checkpoint import CheckpointError, save_checkpoint
from morphcam.model.generator import StreamGenerator

from .conftest import randomized, small_config


@pytest.fixture()
def pipe(text_encoder):
    return GeneratorPipeline(StreamGenerator(randomized(small_config()), text_encoder), "test")


def _frame(w, h, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _open(pipe, sid, w=32, h=32, prompt="comic", seed=1):
    pipe.open_session(sid, SessionParams(w, h, PromptChange.single(prompt), seed=seed))


def test_implements_every_pipeline_method():
    abstract = {n for n, v in vars(Pipeline).items() if callable(v) and not n.startswith("_")}
    assert abstract <= {n for n in dir(GeneratorPipeline) if n in vars(GeneratorPipeline)}


def test_styles_presets_and_names(pipe):
    names = {s.name for s in pipe.styles()}
    for required in ("original", "pencil sketch", "thermal camera", "night vision", "comic", "oil painting",
                     "pixel art", "neon edges", "sepia old film", "blueprint", "watercolor",
                     "halftone pop art", "snowfall", "rain"):
        assert required in names
    assert [p.name for p in pipe.presets()] == ["tiny", "small", "wan-1.3b-shape"]
    assert pipe.name == "generator:test" and pipe.device == "cpu"


def test_prompt_snap_is_on_for_the_embedded_default_only(tmp_path):
    path = save_checkpoint(randomized(small_config()), tmp_path / "m.safetensors")
    assert GeneratorPipeline.load(checkpoint=str(path), prompt_snap=-1).generator.prompt_snap is None
    own = GeneratorPipeline.load(checkpoint=str(path), prompt_snap=0.7).generator.prompt_snap
    assert own is not None and own.threshold == 0.7
    default = GeneratorPipeline.load("tiny", device="cpu", prompt_snap=-1).generator.prompt_snap
    assert default is not None and default.threshold == 0.6
    assert GeneratorPipeline.load("tiny", device="cpu", prompt_snap=0).generator.prompt_snap is None
    assert GeneratorPipeline.load(checkpoint=str(path), steady_noise="auto").generator.steady_noise == "auto"


def test_load_preset_and_errors(tmp_path):
    p = GeneratorPipeline.load("tiny", device="cpu")
    assert p.name == "generator:tiny" and p.device == "cpu"
    with pytest.raises(ValueError, match="valid presets: tiny, small, wan-1.3b-shape"):
        GeneratorPipeline.load("huge")
    model = randomized(small_config())
    path = save_checkpoint(model, tmp_path / "m.safetensors")
    assert GeneratorPipeline.load(checkpoint=str(path)).generator.config == model.config
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated"):
        GeneratorPipeline.load(checkpoint=str(bad))
    with pytest.raises(FileNotFoundError):
        GeneratorPipeline.load(checkpoint=str(tmp_path / "absent.safetensors"))


def test_mixed_sizes_and_bad_frames_fail_only_their_slot(pipe):
    _open(pipe, "a")
    _open(pipe, "b", w=64, h=32)
    _open(pipe, "c")
    nan = np.full((32, 32, 3), np.nan, dtype=np.float32)
    batch = [
        ("a", _frame(32, 32)),
        ("b", _frame(64, 32)),
        ("c", _frame(64, 32)),  # wrong size for c
        ("zzz", _frame(32, 32)),  # unknown session
    ]
    out = pipe.step(batch)
    assert out[0].shape == (32, 32, 3) and out[0].dtype == np.uint8
    assert out[1].shape == (32, 64, 3) and out[1].dtype == np.uint8
    assert isinstance(out[2], ValueError) and "does not match" in str(out[2])
    assert isinstance(out[3], KeyError)
    out = pipe.step([("a", _frame(32, 32)), ("c", nan), ("b", _frame(64, 32).astype(np.int16)), ("a", _frame(32, 32))])
    assert isinstance(out[0], np.ndarray)
    assert isinstance(out[1], ValueError) and "NaN" in str(out[1])
    assert isinstance(out[2], ValueError) and "uint8" in str(out[2])
    assert isinstance(out[3], ValueError) and "two frames" in str(out[3])
    ok = pipe.step([("c", np.random.default_rng(0).random((32, 32, 3), dtype=np.float32))])
    assert ok[0].dtype == np.uint8  # float frames in [0, 1] are accepted


def test_a_failing_group_does_not_fail_the_others(pipe, monkeypatch):
    _open(pipe, "a")
    _open(pipe, "b", w=64, h=32)
    real = pipe.generator.step

    def flaky(sessions, frames):
        if frames.shape[-1] == 64:
            raise RuntimeError("out of memory")
        return real(sessions, frames)

    monkeypatch.setattr(pipe.generator, "step", flaky)
    out = pipe.step([("a", _frame(32, 32)), ("b", _frame(64, 32))])
    assert isinstance(out[0], np.ndarray) and isinstance(out[1], RuntimeError)


def test_prompt_errors_leave_the_session_as_it_was(pipe):
    _open(pipe, "a")
    _open(pipe, "b")
    before = pipe._sessions["a"].stream.prompt.pooled.clone()
    with pytest.raises(ValueError, match="limit is"):
        pipe.set_prompt("a", PromptChange.single("x" * 10_000))
    with pytest.raises(ValueError, match="empty"):
        PromptChange.single("")  # the daemon's own type refuses it first
    with pytest.raises(ValueError, match="empty"):
        pipe.generator.set_prompt(pipe._sessions["a"].stream, "   ")
    assert (pipe._sessions["a"].stream.prompt.pooled == before).all()
    out = pipe.step([("a", _frame(32, 32)), ("b", _frame(32, 32))])
    assert all(isinstance(o, np.ndarray) for o in out)
    _open(pipe, "odd", w=30, h=18)  # padded to 32x32 inside, cropped back
    out = pipe.step([("odd", _frame(30, 18)), ("a", _frame(32, 32))])
    assert out[0].shape == (18, 30, 3) and out[1].shape == (32, 32, 3)
    assert pipe._sessions["odd"].stream.width == 32


def test_prompt_modes_params_and_reset(pipe):
    _open(pipe, "a", prompt="pencil sketch")
    first = [pipe.step([("a", _frame(32, 32, i))])[0] for i in range(3)]
    blend = PromptChange((WeightedPrompt("comic", 2.0), WeightedPrompt("rain", 1.0)), mode="transition",
                         transition_frames=2, interpolation="lerp")
    pipe.set_prompt("a", blend)
    pipe.set_prompt("a", dataclasses.replace(PromptChange.single("blueprint"), mode="recache"))
    pipe.set_params("a", strength=0.5, seed=3)
    assert pipe._sessions["a"].stream.strength == 0.5
    pipe.set_prompt("a", PromptChange.single("pencil sketch"))
    pipe.set_params("a", strength=pipe.generator.config.default_strength, seed=1)
    pipe.reset("a")
    again = [pipe.step([("a", _frame(32, 32, i))])[0] for i in range(3)]
    assert all(np.array_equal(x, y) for x, y in zip(first, again))
    pipe.close_session("a")
    pipe.close_session("a")  # unknown ids are ignored
    assert isinstance(pipe.step([("a", _frame(32, 32))])[0], KeyError)


def test_a_reused_cache_carries_nothing_over(pipe, text_encoder):
    """A cache handed to a new session (a spare here, a pool lane on a GPU) is cleared: values left
    by its last session are masked out, but a masked NaN would still reach the output through
    attention (0 * NaN), so even a cache poisoned that way gives the frames a fresh one gives."""
    pipe.warm([(32, 32)])  # a warm size keeps its spare cache between sessions
    _open(pipe, "a")
    pipe.step([("a", _frame(32, 32))])
    cache = pipe._session("a").cache
    for name in ("k", "v", "x_in", "cond"):
        getattr(cache, name).fill_(float("nan"))
    pipe.close_session("a")
    _open(pipe, "b", seed=5)
    assert pipe._session("b").cache is cache, "the spare cache was reused"
    reused = [pipe.step([("b", _frame(32, 32, i))])[0] for i in range(3)]
    fresh = GeneratorPipeline(StreamGenerator(pipe.generator.model, text_encoder), "test")
    _open(fresh, "b", seed=5)
    for i, out in enumerate(reused):
        assert np.array_equal(out, fresh.step([("b", _frame(32, 32, i))])[0]), f"frame {i}"


def test_fp8_linears_where_they_cannot_run_keep_the_model_and_say_why(tmp_path, caplog):
    """``fp8_linears`` on a CPU: the model keeps its float linears, the log names the reason, and
    the pipeline streams as usual."""
    from torch import nn

    path = save_checkpoint(randomized(small_config()), tmp_path / "m.safetensors")
    with caplog.at_level("WARNING", logger="morphcam.daemon.generator_pipeline"):
        p = GeneratorPipeline.load(checkpoint=str(path), device="cpu", fp8_linears=True)
    assert "fp8_linears is on but the model keeps its precision" in caplog.text and "CUDA GPU" in caplog.text
    assert all(isinstance(blk.ffn_in, nn.Linear) for blk in p.generator.model.dit.blocks)
    _open(p, "s")
    out = p.step([("s", _frame(32, 32))])[0]
    assert not isinstance(out, Exception) and out.shape == (32, 32, 3)


def test_fp8_unavailable_names_each_reason():
    import torch

    from morphcam.model.fp8 import fp8_unavailable

    dit = randomized(small_config()).dit
    assert "CUDA GPU" in fp8_unavailable(dit)
    if torch.cuda.is_available():
        from morphcam.model.fp8 import fp8_supported

        if fp8_supported("cuda"):
            assert "bfloat16" in fp8_unavailable(dit.to("cuda", torch.float16))
            assert fp8_unavailable(dit.to("cuda", torch.bfloat16)) is None


@pytest.mark.gpu
def test_fp8_linears_on_a_gpu_convert_and_stream(tmp_path):
    import torch

    from morphcam.model.fp8 import FP8Linear, fp8_supported

    if not fp8_supported("cuda"):
        pytest.skip("no FP8 tensor cores on this GPU")
    path = save_checkpoint(randomized(small_config()), tmp_path / "m.safetensors")
    p = GeneratorPipeline.load(checkpoint=str(path), device="cuda", dtype="bfloat16", fp8_linears=True)
    assert all(isinstance(blk.ffn_in, FP8Linear) for blk in p.generator.model.dit.blocks)
    _open(p, "s")
    for i in range(3):
        out = p.step([("s", _frame(32, 32, seed=i))])[0]
        assert not isinstance(out, Exception) and out.shape == (32, 32, 3)
    assert p.generator.use_executor("megakernel") is not None  # the mega-kernel needs float linears
    torch.cuda.synchronize()
