"""Named styles: a table of style name -> canonical prompt (and a one-line description).

Prompts for the generator are free text; these names are what hotkeys, chat commands and the
daemon's style list offer. The training code attaches a procedural teacher to each entry.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Style:
    name: str
    prompt: str
    description: str


STYLES: tuple[Style, ...] = (
    Style("original", "the original camera image, unchanged", "the input as it is"),
    Style("pencil sketch", "a graphite pencil sketch on white paper", "grey pencil strokes on paper"),
    Style("thermal camera", "a thermal infrared camera image with a hot iron colour map", "heat-map colours"),
    Style("night vision", "a green night vision scope image with grain", "green, grainy, bright highlights"),
    Style("comic", "a comic book drawing with bold ink outlines and flat colours", "ink outlines, flat colour"),
    Style("oil painting", "an oil painting with thick visible brush strokes", "impasto brush strokes"),
    Style("pixel art", "retro pixel art with a small colour palette", "big pixels, few colours"),
    Style("neon edges", "glowing neon edges on a black background", "bright outlines on black"),
    Style("sepia old film", "a sepia toned old film with scratches and flicker", "brown tint, scratches, flicker"),
    Style("blueprint", "a white line blueprint drawing on blue paper", "white lines on blue"),
    Style("watercolor", "a soft watercolor painting with bleeding colours", "washes of colour on paper"),
    Style("halftone pop art", "pop art with halftone dots and bold colours", "Ben-Day dots, bold colour"),
    Style("snowfall", "the same scene with snow falling", "falling snowflakes over the scene"),
    Style("rain", "the same scene in heavy rain", "rain streaks over the scene"),
)


def style_table() -> dict[str, Style]:
    """Styles by name (a fresh dict each call)."""
    return {s.name: s for s in STYLES}


def style_prompt(name_or_prompt: str) -> str:
    """The canonical prompt of a style name, or the text itself if it is not a style name."""
    style = style_table().get(name_or_prompt.strip().lower())
    return style.prompt if style is not None else name_or_prompt
