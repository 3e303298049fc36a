"""Named styles: a table of style name -> canonical prompt, description and paraphrases.

Prompts for the generator are free text; these names are what hotkeys, chat commands and the
daemon's style list offer. This table is the one source of names and prompts: the procedural
teachers (``morphcam.model.teachers``) attach an image function to each entry, and the
training data draws prompts from ``paraphrases`` (training) or ``heldout_paraphrases``
(evaluation only, so prompt adherence is measured on wordings the model never saw).
This module stays free of torch: the daemon lists styles without loading a teacher.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Style:
    name: str
    prompt: str
    description: str
    paraphrases: tuple[str, ...] = ()  # other wordings used in training
    heldout_paraphrases: tuple[str, ...] = ()  # wordings kept out of training, for evaluation
    generative: bool = False  # adds detail (particles) the model must invent and keep coherent


STYLES: tuple[Style, ...] = (
    Style(
        "original", "the original camera image, unchanged", "the input as it is",
        ("the original image", "no style", "unchanged camera feed", "plain camera", "normal video",
         "keep the picture as it is", "no filter", "the real camera image", "passthrough", "original look"),
        ("just the normal camera", "remove the effect", "unfiltered webcam"),
    ),
    Style(
        "pencil sketch", "a graphite pencil sketch on white paper", "grey pencil strokes on paper",
        ("pencil sketch", "a pencil drawing", "graphite drawing", "sketched in pencil", "a hand drawn sketch",
         "black and white pencil art", "a sketchbook drawing", "drawn with a pencil on paper",
         "charcoal and graphite sketch", "a grey line sketch"),
        ("make it look like a pencil drawing", "sketch of the scene on paper", "pencil artwork"),
    ),
    Style(
        "thermal camera", "a thermal infrared camera image with a hot iron colour map", "heat-map colours",
        ("thermal camera", "infrared camera", "thermal imaging", "heat vision", "a heat map image",
         "thermal vision goggles", "an infrared heat signature view", "FLIR camera view",
         "thermographic image", "hot and cold colours like a heat camera"),
        ("predator vision", "seen through a thermal imager", "infrared heat view"),
    ),
    Style(
        "night vision", "a green night vision scope image with grain", "green, grainy, bright highlights",
        ("night vision", "green night vision", "night vision goggles", "a night scope view",
         "military night vision camera", "grainy green low light image", "image intensifier view",
         "seen through night vision", "green phosphor night camera", "NVG footage"),
        ("like looking through night goggles", "night-vision scope", "green dark vision camera"),
    ),
    Style(
        "comic", "a comic book drawing with bold ink outlines and flat colours", "ink outlines, flat colour",
        ("comic book", "cartoon style", "a comic strip panel", "cel shaded cartoon",
         "flat colours with black outlines", "graphic novel art", "an animated cartoon look",
         "inked comic illustration", "toon shading", "a cartoon drawing"),
        ("make me a cartoon", "comic book art style", "looks like a comic"),
    ),
    Style(
        "oil painting", "an oil painting with thick visible brush strokes", "impasto brush strokes",
        ("oil painting", "painted in oils", "an impasto painting", "a classical oil painting",
         "thick brush strokes on canvas", "painterly oil style", "oil on canvas",
         "a museum oil painting", "brushy oil paint look", "an expressive oil painting"),
        ("paint it in oil", "like an oil portrait", "oil paint artwork"),
    ),
    Style(
        "pixel art", "retro pixel art with a small colour palette", "big pixels, few colours",
        ("pixel art", "8-bit graphics", "retro video game look", "pixelated", "16-bit sprite style",
         "low resolution pixel graphics", "an old console game", "chunky pixels",
         "arcade game pixel look", "a pixelated retro image"),
        ("make it 8 bit", "like a retro game", "pixelated game art"),
    ),
    Style(
        "neon edges", "glowing neon edges on a black background", "bright outlines on black",
        ("neon edges", "neon outlines", "glowing edges", "neon lights", "a tron style glow",
         "synthwave neon outline", "bright glowing lines on black", "neon sign look",
         "edge glow effect", "cyberpunk neon outlines"),
        ("outline everything in neon", "glowing neon contours", "neon line art"),
    ),
    Style(
        "sepia old film", "a sepia toned old film with scratches and flicker", "brown tint, scratches, flicker",
        ("sepia old film", "old film", "vintage film reel", "a silent movie", "sepia toned footage",
         "scratched old movie", "1920s film look", "an antique film with grain",
         "old projector footage", "faded brown film"),
        ("like an old silent film", "vintage sepia movie", "aged film footage"),
    ),
    Style(
        "blueprint", "a white line blueprint drawing on blue paper", "white lines on blue",
        ("blueprint", "a technical blueprint", "architectural drawing on blue paper",
         "white lines on blue", "an engineering plan", "cyanotype line drawing", "a blueprint schematic",
         "drafting drawing on blueprint paper", "technical plan in white ink", "blue print sketch"),
        ("turn it into a blueprint", "schematic on blue paper", "engineer's blueprint view"),
    ),
    Style(
        "watercolor", "a soft watercolor painting with bleeding colours", "washes of colour on paper",
        ("watercolor", "watercolour painting", "a watercolor wash", "painted with watercolours",
         "soft aquarelle", "a wet watercolor painting on paper", "pastel watercolor art",
         "a loose watercolour sketch", "bleeding paint on paper", "watercolor illustration"),
        ("paint it in watercolour", "like a watercolor artwork", "soft aquarelle painting"),
    ),
    Style(
        "halftone pop art", "pop art with halftone dots and bold colours", "Ben-Day dots, bold colour",
        ("halftone pop art", "pop art", "halftone dots", "Ben-Day dots", "Lichtenstein style",
         "a printed comic with dots", "Warhol pop art", "bold pop art colours",
         "newspaper halftone print", "retro print dots"),
        ("make it pop art", "dotted halftone print style", "pop-art poster look"),
    ),
    Style(
        "snowfall", "the same scene with snow falling", "falling snowflakes over the scene",
        ("snowfall", "snow", "falling snow", "a snowy day", "let it snow", "snowflakes falling",
         "a winter snowstorm", "gentle snow falling", "snowing", "a blizzard"),
        ("make it snow", "snow coming down", "add snowflakes"),
        generative=True,
    ),
    Style(
        "rain", "the same scene in heavy rain", "rain streaks over the scene",
        ("rain", "heavy rain", "a rainy day", "rainfall", "pouring rain", "a rainstorm",
         "rain streaks", "a downpour", "raining hard", "rainy weather"),
        ("make it rain", "rain falling down", "add rain"),
        generative=True,
    ),
    Style(
        "fireflies", "the same scene at dusk with glowing fireflies", "glowing fireflies drifting at dusk",
        ("fireflies", "glowing fireflies", "fireflies at dusk", "lightning bugs", "magical glowing lights",
         "floating fireflies", "a summer evening with fireflies", "drifting glow bugs",
         "twinkling fireflies", "fairy lights floating"),
        ("add fireflies", "glowing bugs flying around", "firefly night"),
        generative=True,
    ),
    Style(
        "sparks", "the same scene with glowing sparks and embers rising", "embers rising through the scene",
        ("sparks", "embers", "rising embers", "flying sparks", "glowing embers", "fire sparks",
         "a campfire's sparks", "burning embers floating up", "sparks in the air", "ember particles"),
        ("add sparks", "embers floating upwards", "sparks flying"),
        generative=True,
    ),
)


def style_table() -> dict[str, Style]:
    """Styles by name (a fresh dict each call)."""
    return {s.name: s for s in STYLES}


def style_prompt(name_or_prompt: str) -> str:
    """The canonical prompt of a style name, or the text itself if it is not a style name."""
    style = style_table().get(name_or_prompt.strip().lower())
    return style.prompt if style is not None else name_or_prompt
