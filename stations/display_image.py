"""The display-image pipeline: an owner's upload becomes what a station's 32×32 display shows.

Pure Pillow, no Django. ``prepare_display_image(data)`` refuses what cannot work with a message
a person understands (``DisplayImageError``), and otherwise returns a ``DisplayImage``: frames
of exactly 32×32 RGB at 10 frames per second (100 ms each), notes about what was changed
(scaled, resampled, near-black made black), a preview scaled up without smoothing, and the
payload sent to the station (docs/OCPP.md, "Display image").

Rules (from the product): JPG, PNG or GIF; at most 200 kB; 32×32 px; background completely
black (#000000); animations at 10 frames/s.
"""

from __future__ import annotations

import base64
import io
import warnings
from dataclasses import dataclass, field

from PIL import Image, ImageChops, ImageDraw, ImageFont, ImageSequence, UnidentifiedImageError

SIZE = 32
MAX_BYTES = 200_000  # "200 kB"; decimal, so a 201 kB file is refused whichever kB is meant
MAX_SOURCE_PIXELS = 4096 * 4096  # decoded size bound: refuse decompression bombs early
FRAME_MS = 100  # 10 frames per second
MAX_FRAMES = 100  # ten seconds of animation
NEAR_BLACK = 24  # a pixel whose channels are all <= this looks black on an LED display
ALLOWED_FORMATS = {"JPEG": "JPG", "PNG": "PNG", "GIF": "GIF"}


class DisplayImageError(ValueError):
    """The upload cannot be used; ``str(error)`` is the message for the owner."""


@dataclass
class DisplayImage:
    frames: list[Image.Image]  # each 32×32 RGB, shown FRAME_MS each
    source_format: str
    source_size: tuple[int, int]
    notes: list[str] = field(default_factory=list)

    @property
    def animated(self) -> bool:
        return len(self.frames) > 1

    def encoded(self) -> bytes:
        """PNG for a still image, looping GIF at 10 frames/s for an animation."""
        out = io.BytesIO()
        if self.animated:
            self.frames[0].save(
                out,
                "GIF",
                save_all=True,
                append_images=self.frames[1:],
                duration=FRAME_MS,
                loop=0,
                disposal=1,
                optimize=False,
            )
        else:
            self.frames[0].save(out, "PNG")
        return out.getvalue()

    def preview(self, scale: int = 8) -> bytes:
        """The image scaled up with nearest-neighbour (no smoothing), animated like the station
        will show it; a GIF either way so browsers animate it."""
        big = [
            f.resize((SIZE * scale, SIZE * scale), Image.Resampling.NEAREST) for f in self.frames
        ]
        out = io.BytesIO()
        big[0].save(out, "GIF", save_all=True, append_images=big[1:], duration=FRAME_MS, loop=0)
        return out.getvalue()

    def station_payload(self) -> dict:
        """What the station receives in DataTransfer ``data`` (JSON): raw RGB888 frames, row by
        row from the top-left, base64-encoded; see docs/OCPP.md."""
        return {
            "width": SIZE,
            "height": SIZE,
            "frameMs": FRAME_MS,
            "format": "rgb888",
            "frames": [base64.b64encode(f.tobytes()).decode("ascii") for f in self.frames],
        }


def _open(data: bytes) -> Image.Image:
    if len(data) > MAX_BYTES:
        raise DisplayImageError(
            f"The file is {len(data) / 1000:.0f} kB; at most {MAX_BYTES // 1000} kB are allowed."
        )
    if not data:
        raise DisplayImageError("The file is empty.")
    try:
        with warnings.catch_warnings():
            # Our own, much lower pixel bound follows; Pillow's warning would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise DisplayImageError(
            "The image has far too many pixels for a 32×32 display (a decompression bomb?); "
            "upload it at 32×32."
        ) from exc
    except UnidentifiedImageError as exc:
        raise DisplayImageError(
            "This is not a JPG, PNG or GIF image we can read (SVG, BMP, WebP and others are "
            "not supported)."
        ) from exc
    if image.format not in ALLOWED_FORMATS:
        raise DisplayImageError(
            f"{image.format} images are not supported: upload a JPG, PNG or GIF."
        )
    width, height = image.size
    if width * height > MAX_SOURCE_PIXELS:
        raise DisplayImageError(
            f"The image is {width}×{height} pixels, far too large for a 32×32 display; "
            "upload it at 32×32 (at most 4096×4096)."
        )
    return image


def _source_frames(image: Image.Image) -> list[tuple[Image.Image, int]]:
    """(RGB frame, duration in ms) for every frame; truncated files are refused here."""
    frames = []
    try:
        for frame in ImageSequence.Iterator(image):
            duration = int(frame.info.get("duration", FRAME_MS) or FRAME_MS)
            frames.append((frame.convert("RGB"), max(duration, 20)))
            if len(frames) > 10 * MAX_FRAMES:
                break
    except (OSError, SyntaxError, ValueError) as exc:
        raise DisplayImageError(
            "The file is damaged or incomplete (truncated); save it again and re-upload."
        ) from exc
    return frames


def _resample_to_10_fps(frames: list[tuple[Image.Image, int]]) -> list[Image.Image]:
    """The frame visible at 0, 100, 200 ... ms of the source animation."""
    total = sum(duration for _frame, duration in frames)
    count = min(MAX_FRAMES, max(1, round(total / FRAME_MS)))
    out, index, elapsed = [], 0, 0
    for tick in range(count):
        t = tick * FRAME_MS
        while index < len(frames) - 1 and elapsed + frames[index][1] <= t:
            elapsed += frames[index][1]
            index += 1
        out.append(frames[index][0])
    return out


def _looks_like_pixel_art(image: Image.Image, frames: list[Image.Image]) -> bool:
    width, height = image.size
    few_colours = frames[0].getcolors(maxcolors=256) is not None
    return few_colours or (width % SIZE == 0 and height % SIZE == 0)


def _fit(frame: Image.Image, resample: Image.Resampling) -> Image.Image:
    """Scale into 32×32 keeping the aspect ratio, centred on black."""
    width, height = frame.size
    scale = min(SIZE / width, SIZE / height)
    new = (max(1, round(width * scale)), max(1, round(height * scale)))
    scaled = frame.resize(new, resample)
    canvas = Image.new("RGB", (SIZE, SIZE), (0, 0, 0))
    canvas.paste(scaled, ((SIZE - new[0]) // 2, (SIZE - new[1]) // 2))
    return canvas


def _border(frame: Image.Image) -> list[tuple[int, int, int]]:
    px = frame.load()
    edge = [(x, 0) for x in range(SIZE)] + [(x, SIZE - 1) for x in range(SIZE)]
    edge += [(0, y) for y in range(1, SIZE - 1)] + [(SIZE - 1, y) for y in range(1, SIZE - 1)]
    return [px[x, y] for x, y in edge]


def _blacken_near_black(frame: Image.Image) -> tuple[Image.Image, int]:
    """Make every pixel whose channels are all <= NEAR_BLACK pure black; returns the frame and
    how many pixels changed."""
    dark = [band.point(lambda v: 255 if v <= NEAR_BLACK else 0) for band in frame.split()]
    near_black = ImageChops.multiply(ImageChops.multiply(dark[0], dark[1]), dark[2])
    red, green, blue = frame.split()
    brightest = ImageChops.lighter(ImageChops.lighter(red, green), blue)
    lit = brightest.point(lambda v: 255 if v > 0 else 0)
    changed = ImageChops.multiply(near_black, lit).histogram()[255]
    fixed = frame.copy()
    fixed.paste((0, 0, 0), mask=near_black)
    return fixed, changed


def prepare_display_image(data: bytes, *, make_near_black_black: bool = False) -> DisplayImage:
    """Validate and convert an upload. Raises DisplayImageError with the owner's message."""
    image = _open(data)
    source_format = ALLOWED_FORMATS[image.format]
    source_size = image.size
    source = _source_frames(image)
    notes: list[str] = []
    frames = [f for f, _d in source]
    if len(source) > 1:
        frames = _resample_to_10_fps(source)
        durations = {d for _f, d in source}
        if durations != {FRAME_MS}:
            notes.append(
                f"The animation was resampled to 10 frames per second ({len(frames)} frames)."
            )
    if source_size != (SIZE, SIZE):
        pixel_art = _looks_like_pixel_art(image, frames)
        resample = Image.Resampling.NEAREST if pixel_art else Image.Resampling.LANCZOS
        frames = [_fit(f, resample) for f in frames]
        notes.append(
            f"The image was {source_size[0]}×{source_size[1]} pixels and was scaled to 32×32 "
            f"({'nearest neighbour, for pixel art' if pixel_art else 'smoothed'}); upload it at "
            "32×32 for the best result."
        )
    border = [p for f in frames for p in _border(f)]
    bright = [p for p in border if max(p) > NEAR_BLACK]
    if bright:
        share = 100 * len(bright) / len(border)
        raise DisplayImageError(
            f"The background must be black (#000000): {share:.0f}% of the image's edge is not "
            "black. Use a black background; the display shows every non-black pixel."
        )
    near = [p for p in border if p != (0, 0, 0)]
    if near:
        if not make_near_black_black:
            raise DisplayImageError(
                "The background is almost but not completely black (#000000). Choose "
                "'make near-black pixels black' to fix it."
            )
        fixed = [_blacken_near_black(f) for f in frames]
        frames = [f for f, _n in fixed]
        notes.append(f"{sum(n for _f, n in fixed)} near-black pixels were made black.")
    return DisplayImage(
        frames=frames, source_format=source_format, source_size=source_size, notes=notes
    )


# --- Stock designs and the station's name -------------------------------------------------
# Drawn in code (no image files to keep in sync): aliased shapes on a black 32×32 canvas, so
# every pixel is a full LED colour and the background is exactly #000000 as the rule asks.

YELLOW, GREEN, RED = (255, 200, 0), (0, 200, 60), (230, 20, 40)
WHITE, CYAN = (255, 255, 255), (0, 190, 255)


def _canvas() -> tuple[Image.Image, ImageDraw.ImageDraw]:
    image = Image.new("RGB", (SIZE, SIZE), (0, 0, 0))
    return image, ImageDraw.Draw(image)


def _bolt() -> list[Image.Image]:
    image, draw = _canvas()
    draw.polygon([(18, 2), (7, 18), (15, 18), (12, 30), (25, 12), (17, 12), (21, 2)], fill=YELLOW)
    return [image]


def _plug() -> list[Image.Image]:
    image, draw = _canvas()
    draw.rectangle((11, 4, 13, 10), fill=WHITE)  # prongs
    draw.rectangle((18, 4, 20, 10), fill=WHITE)
    draw.rounded_rectangle((7, 10, 24, 20), radius=3, fill=GREEN)
    draw.rectangle((14, 20, 17, 29), fill=GREEN)  # cable
    return [image]


def _battery() -> list[Image.Image]:
    """A battery filling up, 10 steps = one second per loop at 10 frames/s."""
    frames = []
    for step in range(10):
        image, draw = _canvas()
        draw.rectangle((4, 10, 25, 22), outline=WHITE)
        draw.rectangle((26, 13, 27, 19), fill=WHITE)
        width = 2 * step
        if width:
            draw.rectangle((6, 12, 5 + width, 20), fill=GREEN if step > 2 else YELLOW)
        frames.append(image)
    return frames


def _heart() -> list[Image.Image]:
    """A heart beating: big for 3 frames, small for 2 (half a second per beat)."""

    def heart(scale: float) -> Image.Image:
        image, draw = _canvas()
        r = round(6 * scale)
        cx, cy = 16, 14
        draw.ellipse((cx - 2 * r, cy - r, cx, cy + r), fill=RED)
        draw.ellipse((cx, cy - r, cx + 2 * r, cy + r), fill=RED)
        draw.polygon([(cx - 2 * r, cy + 1), (cx + 2 * r, cy + 1), (cx, cy + 2 * r + 2)], fill=RED)
        return image

    big, small = heart(1.0), heart(0.8)
    return [big, big, big, small, small]


DESIGNS: dict[str, tuple[str, object]] = {
    "bolt": ("Lightning bolt", _bolt),
    "plug": ("Plug", _plug),
    "battery": ("Charging battery (animated)", _battery),
    "heart": ("Beating heart (animated)", _heart),
}


def design_image(key: str) -> DisplayImage:
    """A stock design; KeyError for an unknown key."""
    _label, draw = DESIGNS[key]
    return DisplayImage(frames=draw(), source_format="design", source_size=(SIZE, SIZE))


def name_image(name: str) -> DisplayImage:
    """The station's name: centred if it fits, else scrolling right to left at 10 frames/s
    (at most MAX_FRAMES frames, so very long names scroll faster)."""
    name = " ".join(name.split()) or "?"
    font = ImageFont.load_default(size=11)
    left, top, right, bottom = font.getbbox(name)
    width = right - left
    y = (SIZE - (bottom - top)) // 2 - top

    def frame(x: int) -> Image.Image:
        image, draw = _canvas()
        draw.fontmode = "1"  # no anti-aliasing: every pixel fully on or off
        draw.text((x - left, y), name, font=font, fill=CYAN)
        return image

    if width <= SIZE:
        return DisplayImage(
            frames=[frame((SIZE - width) // 2)], source_format="name", source_size=(SIZE, SIZE)
        )
    distance = SIZE + width
    step = max(2, -(-distance // MAX_FRAMES))
    frames = [frame(SIZE - offset) for offset in range(0, distance, step)]
    # Start with the name's beginning on screen (what a still preview shows), then loop.
    first = min(range(len(frames)), key=lambda i: abs(SIZE - i * step - 1))
    frames = frames[first:] + frames[:first]
    return DisplayImage(
        frames=frames,
        source_format="name",
        source_size=(SIZE, SIZE),
        notes=[f"The name is wider than the display and scrolls ({len(frames)} frames)."],
    )


def from_payload(payload: dict) -> DisplayImage:
    """Back from the stored DataTransfer payload (exact: raw RGB frames) for previews."""
    frames = [Image.frombytes("RGB", (SIZE, SIZE), base64.b64decode(f)) for f in payload["frames"]]
    return DisplayImage(frames=frames, source_format="payload", source_size=(SIZE, SIZE))


def payload_check(payload: object) -> str | None:
    """Why a DisplayImage payload is malformed (None if fine): what a station checks."""
    if not isinstance(payload, dict):
        return "data must be a JSON object"
    expected = {"width": SIZE, "height": SIZE, "frameMs": FRAME_MS, "format": "rgb888"}
    for key, value in expected.items():
        if payload.get(key) != value:
            return f"{key} must be {value!r}"
    frames = payload.get("frames")
    if not isinstance(frames, list) or not 1 <= len(frames) <= MAX_FRAMES:
        return f"frames must be a list of 1 to {MAX_FRAMES} frames"
    for index, frame in enumerate(frames):
        try:
            raw = base64.b64decode(frame, validate=True)
        except (TypeError, ValueError):
            return f"frame {index} is not base64"
        if len(raw) != SIZE * SIZE * 3:
            return f"frame {index} has {len(raw)} bytes, not {SIZE * SIZE * 3}"
    return None
