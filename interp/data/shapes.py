"""Seeded synthetic images of coloured shapes with questions, captions, and a hallucination probe.

Scenes are drawn with PIL on a small white canvas (84 px by default: 6 x 6 DINOv2 patches):
either one object (a shape, a colour, a position: left / right / top / bottom) or two or three
identical objects (a count). Each scene yields short question-answer items (colour, shape,
position, count) and a caption ("a red circle on the left", "two blue squares").

The hallucination probe (`generate_prior_probe`) draws objects whose name carries a strong
colour prior in a colour that contradicts it: a blue banana (a crescent), a purple sun, a green
tomato (circles). Asked "What colour is the banana?", a model that ignores the image answers
the prior ("yellow"): the answer needs the image. Every item knows the attributes really in
its image, so generated text can be scored CHAIR-style (`attribute_mentions`,
`hallucinated_mentions`): an attribute word (colour, shape, count, position) that is not in the
image is a hallucination.

    ds = generate_shapes(8, seed=0)
    ds.items[0].question, ds.items[0].answer     # ('What colour is the square?', 'green')
    probe = generate_prior_probe(6, seed=0)
    probe.items[0].prior                         # 'yellow' (the answer the language prior gives)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from interp.data.progress import Progress, ticker

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 30, 30), "green": (30, 150, 50), "blue": (35, 75, 220),
    "yellow": (235, 205, 20), "purple": (135, 45, 175),
}
SHAPES = ("circle", "square", "triangle", "crescent")
PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "crescent": "crescents"}
POSITIONS = ("left", "right", "top", "bottom")
COUNTS = {1: "one", 2: "two", 3: "three"}
QTYPES = ("colour", "shape", "position", "count", "caption")
# Objects with a strong colour prior, the shape that draws them, and the prior colour.
PRIOR_OBJECTS: dict[str, tuple[str, str]] = {
    "banana": ("crescent", "yellow"), "sun": ("circle", "yellow"), "lemon": ("circle", "yellow"),
    "tomato": ("circle", "red"), "strawberry": ("triangle", "red"),
}
BACKGROUND = (255, 255, 255)
CAPTION_QUESTION = "Describe the image."


@dataclass(frozen=True)
class ShapeObject:
    shape: str
    colour: str
    x: float  # centre, pixels
    y: float
    size: float  # diameter / side, pixels


@dataclass(frozen=True)
class Scene:
    objects: tuple[ShapeObject, ...]
    position: str | None  # single-object scenes: where the object is

    @property
    def count(self) -> int:
        return len(self.objects)

    @property
    def shape(self) -> str:
        return self.objects[0].shape

    @property
    def colour(self) -> str:
        return self.objects[0].colour

    def attributes(self) -> dict[str, set[str]]:
        """What is really in the image, per attribute kind (used for CHAIR-style scoring)."""
        return {"colour": {o.colour for o in self.objects}, "shape": {o.shape for o in self.objects},
                "count": {COUNTS[self.count]}, "position": {self.position} if self.position else set()}

    def caption(self) -> str:
        if self.count == 1:
            return f"a {self.colour} {self.shape} on the {self.position}" if self.position in ("left", "right") \
                else f"a {self.colour} {self.shape} at the {self.position}"
        return f"{COUNTS[self.count]} {self.colour} {PLURALS[self.shape]}"


@dataclass(frozen=True)
class ShapeItem:
    image: np.ndarray = field(repr=False)  # (H, W, 3) uint8
    scene: Scene
    qtype: str  # colour | shape | position | count | caption
    question: str
    answer: str
    noun: str  # the word the question names the object with
    prior: str | None = None  # the answer the language prior suggests (probe items)


@dataclass(frozen=True)
class ShapesDataset:
    name: str
    items: list[ShapeItem]
    image_size: int
    seed: int

    def __len__(self) -> int:
        return len(self.items)

    def images(self) -> list[np.ndarray]:
        return [it.image for it in self.items]

    def to_frame(self) -> pd.DataFrame:
        rows = []
        for i, it in enumerate(self.items):
            s = it.scene
            rows.append({"item": i, "qtype": it.qtype, "question": it.question, "answer": it.answer,
                         "noun": it.noun, "prior": it.prior, "shape": s.shape, "colour": s.colour,
                         "count": s.count, "position": s.position})
        return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------- drawing


def render(scene: Scene, image_size: int = 84) -> np.ndarray:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (image_size, image_size), BACKGROUND)
    d = ImageDraw.Draw(img)
    for o in scene.objects:
        r, c = o.size / 2, COLOURS[o.colour]
        box = (o.x - r, o.y - r, o.x + r, o.y + r)
        if o.shape == "circle":
            d.ellipse(box, fill=c)
        elif o.shape == "square":
            d.rectangle((o.x - 0.85 * r, o.y - 0.85 * r, o.x + 0.85 * r, o.y + 0.85 * r), fill=c)
        elif o.shape == "triangle":
            d.polygon([(o.x, o.y - r), (o.x - r, o.y + 0.8 * r), (o.x + r, o.y + 0.8 * r)], fill=c)
        elif o.shape == "crescent":  # a disc minus an offset disc: banana-like
            d.ellipse(box, fill=c)
            s = 0.35 * r
            d.ellipse((o.x - r + s, o.y - r - s, o.x + r + s, o.y + r - s), fill=BACKGROUND)
        else:
            raise ValueError(f"unknown shape {o.shape!r}; allowed: {', '.join(SHAPES)}")
    return np.asarray(img, dtype=np.uint8).copy()


def _single(rng: np.random.Generator, shape: str, colour: str, image_size: int) -> Scene:
    pos = POSITIONS[rng.integers(len(POSITIONS))]
    u = image_size / 84
    size = rng.uniform(24, 32) * u
    near, mid = image_size * 0.26, image_size / 2
    jit = lambda: rng.uniform(-4, 4) * u  # noqa: E731
    x, y = {"left": (near, mid), "right": (image_size - near, mid), "top": (mid, near),
            "bottom": (mid, image_size - near)}[pos]
    return Scene((ShapeObject(shape, colour, x + jit(), y + jit(), size),), pos)


def _multi(rng: np.random.Generator, shape: str, colour: str, count: int, image_size: int) -> Scene:
    u = image_size / 84
    size = rng.uniform(18, 22) * u
    for _ in range(1000):
        pts = rng.uniform(size * 0.7, image_size - size * 0.7, size=(count, 2))
        d = np.linalg.norm(pts[:, None] - pts[None], axis=-1) + np.eye(count) * 1e9
        if d.min() > size * 1.25:
            return Scene(tuple(ShapeObject(shape, colour, float(x), float(y), size) for x, y in pts), None)
    raise RuntimeError("could not place the shapes without overlap")  # pragma: no cover


def _question(rng: np.random.Generator, scene: Scene, qtype: str) -> tuple[str, str, str]:
    noun = scene.shape if rng.random() < 0.5 else "shape"
    if qtype == "colour":
        q = f"What colour is the {noun}?" if scene.count == 1 else f"What colour are the {PLURALS[scene.shape]}?"
        return q, scene.colour, noun
    if qtype == "shape":
        return "What shape is in the image?", scene.shape, "shape"
    if qtype == "position":
        return f"Where is the {noun}?", scene.position or "", noun
    if qtype == "count":
        return "How many shapes are there?", COUNTS[scene.count], "shapes"
    if qtype == "caption":
        return CAPTION_QUESTION, scene.caption(), "image"
    raise ValueError(f"unknown question type {qtype!r}; allowed: {', '.join(QTYPES)}")


def generate_shapes(n: int, seed: int = 0, *, image_size: int = 84, qtypes: tuple[str, ...] = QTYPES,
                    shapes: tuple[str, ...] = SHAPES, multi_share: float = 0.35,
                    progress: Progress | None = None) -> ShapesDataset:
    """`n` (image, question, answer) items; a share of the scenes hold 2-3 objects (asked
    count, colour, shape or caption), the rest one object (asked anything but count)."""
    bad = [q for q in qtypes if q not in QTYPES]
    if bad or not qtypes:
        raise ValueError(f"unknown question types {bad}; allowed: {', '.join(QTYPES)}")
    rng = np.random.default_rng(seed)
    items = []
    names = list(COLOURS)
    tick = ticker(progress, n)
    for i in range(n):
        shape, colour = shapes[rng.integers(len(shapes))], names[rng.integers(len(names))]
        single_q = [q for q in qtypes if q != "count"]
        multi_q = [q for q in qtypes if q != "position"]
        multi = bool(multi_q) and (not single_q or rng.random() < multi_share)
        scene = _multi(rng, shape, colour, int(rng.integers(2, 4)), image_size) if multi \
            else _single(rng, shape, colour, image_size)
        pool = multi_q if multi else single_q
        qtype = pool[rng.integers(len(pool))]
        q, a, noun = _question(rng, scene, qtype)
        items.append(ShapeItem(render(scene, image_size), scene, qtype, q, a, noun))
        tick(i + 1)
    return ShapesDataset("shapes", items, image_size, seed)


def generate_prior_probe(n: int, seed: int = 0, *, image_size: int = 84, captions: bool = False,
                         progress: Progress | None = None) -> ShapesDataset:
    """Objects drawn in a colour that contradicts their name's colour prior, asked their colour
    (and, with `captions`, also asked to describe the same image)."""
    rng = np.random.default_rng(seed + 7919)
    objects = list(PRIOR_OBJECTS)
    items = []
    tick = ticker(progress, n)
    for i in range(n):
        tick(i)
        obj = objects[i % len(objects)]
        shape, prior = PRIOR_OBJECTS[obj]
        colours = [c for c in COLOURS if c != prior]
        colour = colours[rng.integers(len(colours))]
        scene = _single(rng, shape, colour, image_size)
        img = render(scene, image_size)
        items.append(ShapeItem(img, scene, "colour", f"What colour is the {obj}?", colour, obj, prior))
        if captions:
            items.append(ShapeItem(img, scene, "caption", CAPTION_QUESTION, scene.caption(), obj, prior))
    tick(n)
    return ShapesDataset("prior_probe", items, image_size, seed)


# ---------------------------------------------------------------------- CHAIR-style scoring

_VOCAB: dict[str, tuple[str, str]] = {
    **{c: ("colour", c) for c in COLOURS}, **{s: ("shape", s) for s in SHAPES},
    **{p: ("shape", s) for s, p in PLURALS.items()}, **{p: ("position", p) for p in POSITIONS},
    **{w: ("count", w) for w in COUNTS.values()},
}
_WORD = re.compile(r"[a-z]+")


def attribute_mentions(text: str) -> list[tuple[str, str, str, int, int]]:
    """Attribute words in `text`: (word, kind, canonical value, start, end) in order."""
    out = []
    for m in _WORD.finditer(text.lower()):
        if m.group() in _VOCAB:
            kind, value = _VOCAB[m.group()]
            out.append((m.group(), kind, value, m.start(), m.end()))
    return out


def hallucinated_mentions(text: str, scene: Scene) -> list[tuple[str, str, int, int]]:
    """Mentioned attribute words that are not in the image: (word, kind, start, end)."""
    truth = scene.attributes()
    return [(w, k, s, e) for w, k, v, s, e in attribute_mentions(text) if v not in truth[k]]


def answer_correct(text: str, item: ShapeItem) -> bool:
    """The generated text names the right attribute (captions: all of the caption's attributes)
    and no attribute that is not in the image."""
    found = {v for _, _, v, _, _ in attribute_mentions(text)}
    wanted = {v for _, _, v, _, _ in attribute_mentions(item.answer)}
    return wanted <= found and not hallucinated_mentions(text, item.scene)
