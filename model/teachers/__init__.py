"""Procedural style teachers: for each named style, a torch function that restyles clips.

The training data pairs synthetic input clips with what a teacher makes of them. Teachers are
deterministic given (frames, times, seed), batched, and run on any device::

    from morphcam.model.teachers import TEACHERS, teacher_for_prompt
    out = TEACHERS["comic"](frames, times, seed)  # (B, T, 3, H, W) in [0, 1] -> same

``python -m morphcam.model.teachers.preview OUT.png`` draws a contact sheet of every style.
"""
from .base import StyleTeacher
from .table import TEACHERS, teacher_for_prompt

__all__ = ["StyleTeacher", "TEACHERS", "teacher_for_prompt"]
