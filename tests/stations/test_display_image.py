"""The display-image pipeline on generated images of every kind the issue names."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image, ImageSequence

from stations.display_image import (
    FRAME_MS,
    MAX_BYTES,
    SIZE,
    DisplayImageError,
    prepare_display_image,
)


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **kwargs)
    return out.getvalue()


def heart(size: int = SIZE, colour=(220, 0, 0), background=(0, 0, 0)) -> Image.Image:
    image = Image.new("RGB", (size, size), background)
    unit = size // 8
    for x in range(2 * unit, 6 * unit):
        for y in range(2 * unit, 6 * unit):
            image.putpixel((x, y), colour)
    return image


def test_a_32px_png_passes_unchanged():
    result = prepare_display_image(encode(heart(), "PNG"))
    assert result.notes == []
    assert not result.animated
    assert result.frames[0].size == (SIZE, SIZE)
    assert result.frames[0].getpixel((16, 16)) == (220, 0, 0)
    assert result.frames[0].getpixel((0, 0)) == (0, 0, 0)
    payload = result.station_payload()
    assert payload["frameMs"] == 100 and len(payload["frames"]) == 1
    assert len(base64.b64decode(payload["frames"][0])) == SIZE * SIZE * 3


def test_pixel_art_is_scaled_with_nearest_neighbour_and_said_so():
    result = prepare_display_image(encode(heart(128), "PNG"))
    assert "128×128" in result.notes[0] and "nearest neighbour" in result.notes[0]
    frame = result.frames[0]
    # Nearest neighbour keeps hard edges: only the two source colours survive.
    assert {colour for _count, colour in frame.getcolors()} == {(0, 0, 0), (220, 0, 0)}


def test_photo_like_jpeg_is_smoothed_and_letterboxed():
    image = Image.new("RGB", (300, 150), (0, 0, 0))
    for x in range(60, 240):
        for y in range(30, 120):
            image.putpixel((x, y), (x % 256, y % 256, (x * y) % 256))
    result = prepare_display_image(encode(image, "JPEG", quality=95))
    assert result.source_format == "JPG"
    assert "smoothed" in result.notes[0]
    assert result.frames[0].size == (SIZE, SIZE)
    # 2:1 source → 32×16 centred, black bands above and below.
    assert result.frames[0].getpixel((16, 2)) == (0, 0, 0)


def test_gif_animation_is_resampled_to_10_fps():
    frames = [heart(colour=(0, 0, 50 + 40 * i)) for i in range(4)]
    # 4 frames of 250 ms = 1 s → 10 frames of 100 ms, each showing the frame visible then.
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=250, loop=0)
    result = prepare_display_image(data)
    assert result.animated and len(result.frames) == 10
    assert "10 frames per second" in result.notes[0]
    blues = [f.getpixel((16, 16))[2] for f in result.frames]
    assert blues[0] == blues[1] == blues[2] and blues[3] != blues[2]
    # The stored GIF plays the same 1 s timeline (GIF encoders merge repeated frames).
    encoded = Image.open(io.BytesIO(result.encoded()))
    durations = [frame.info["duration"] for frame in ImageSequence.Iterator(encoded)]
    assert sum(durations) == 10 * FRAME_MS
    assert all(d % FRAME_MS == 0 for d in durations)
    preview = Image.open(io.BytesIO(result.preview()))
    assert preview.size == (256, 256) and preview.n_frames == encoded.n_frames


def test_a_201_kb_file_is_refused():
    data = encode(heart(), "PNG") + b"\0" * (201_000)
    assert len(data) > MAX_BYTES
    with pytest.raises(DisplayImageError, match=r"at most 200 kB"):
        prepare_display_image(data)


@pytest.mark.parametrize("fmt", ["BMP", "WEBP", "TIFF"])
def test_other_formats_are_refused(fmt):
    with pytest.raises(DisplayImageError, match="upload a JPG, PNG or GIF"):
        prepare_display_image(encode(heart(), fmt))


def test_svg_is_refused():
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="32" height="32"></svg>'
    with pytest.raises(DisplayImageError, match="not a JPG, PNG or GIF"):
        prepare_display_image(svg)


def test_a_10000px_png_is_refused_before_decoding():
    data = encode(Image.new("1", (10_000, 10_000)), "PNG", optimize=True)
    huge = encode(Image.new("1", (20_000, 20_000)), "PNG", optimize=True)
    with pytest.raises(DisplayImageError, match="far too many pixels"):
        prepare_display_image(huge)
    assert len(data) < MAX_BYTES  # small on disk: a decompression bomb
    with pytest.raises(DisplayImageError, match="10000×10000"):
        prepare_display_image(data)


def test_a_gif_with_a_white_background_is_refused():
    with pytest.raises(DisplayImageError, match=r"background must be black \(#000000\)"):
        prepare_display_image(encode(heart(background=(255, 255, 255)), "GIF"))


def test_near_black_background_is_offered_a_fix():
    data = encode(heart(background=(10, 8, 12)), "PNG")
    with pytest.raises(DisplayImageError, match="make near-black pixels black"):
        prepare_display_image(data)
    result = prepare_display_image(data, make_near_black_black=True)
    assert result.frames[0].getpixel((0, 0)) == (0, 0, 0)
    assert result.frames[0].getpixel((16, 16)) == (220, 0, 0)
    assert "near-black pixels were made black" in result.notes[-1]


def test_a_truncated_file_is_refused():
    data = encode(heart(), "PNG")
    with pytest.raises(DisplayImageError, match="damaged or incomplete"):
        prepare_display_image(data[: len(data) // 2])


def test_empty_upload():
    with pytest.raises(DisplayImageError, match="empty"):
        prepare_display_image(b"")
