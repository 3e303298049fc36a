"""The teacher table: every style of ``morphcam.model.styles.STYLES`` with its look attached.

Names, prompts and paraphrases live in ``styles.py`` (the daemon lists them without torch);
this module only says which function draws each one, and fails loudly if the two disagree.
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

from ..styles import STYLES
from . import looks, particles
from .base import Look, StyleTeacher

_LOOKS: Mapping[str, Look] = MappingProxyType({
    "original": looks.original,
    "pencil sketch": looks.pencil_sketch,
    "thermal camera": looks.thermal_camera,
    "night vision": looks.night_vision,
    "comic": looks.comic,
    "oil painting": looks.oil_painting,
    "pixel art": looks.pixel_art,
    "neon edges": looks.neon_edges,
    "sepia old film": looks.sepia_old_film,
    "blueprint": looks.blueprint,
    "watercolor": looks.watercolor,
    "halftone pop art": looks.halftone_pop_art,
    "snowfall": particles.snowfall,
    "rain": particles.rain,
    "fireflies": particles.fireflies,
    "sparks": particles.sparks,
})


def _build() -> Mapping[str, StyleTeacher]:
    names = [s.name for s in STYLES]
    if set(names) != set(_LOOKS):
        raise RuntimeError(f"styles.py and the teacher looks disagree: {sorted(set(names) ^ set(_LOOKS))}")
    return MappingProxyType({
        s.name: StyleTeacher(
            name=s.name,
            prompt=s.prompt,
            paraphrases=s.paraphrases,
            heldout_paraphrases=s.heldout_paraphrases,
            generative=s.generative,
            description=s.description,
            look=_LOOKS[s.name],
        )
        for s in STYLES
    })


# Read-only, in the order of STYLES. Building it only wraps functions: no tensors, no I/O.
TEACHERS: Mapping[str, StyleTeacher] = _build()


def _normalise(text: str) -> str:
    return " ".join(text.lower().split())


def teacher_for_prompt(text: str) -> StyleTeacher | None:
    """The teacher whose name, canonical prompt or any paraphrase (training or held out)
    equals ``text``, ignoring case and runs of spaces; None when no style has that wording."""
    key = _normalise(text)
    for teacher in TEACHERS.values():
        wordings = (teacher.name, teacher.prompt, *teacher.paraphrases, *teacher.heldout_paraphrases)
        if any(_normalise(w) == key for w in wordings):
            return teacher
    return None
