"""Stock designs, the station's name on the display, and the DisplayImage payload check the
simulator (like a station) applies."""

from __future__ import annotations

import pytest

from stations.display_image import (
    DESIGNS,
    FRAME_MS,
    MAX_FRAMES,
    SIZE,
    design_image,
    from_payload,
    name_image,
    payload_check,
)


@pytest.mark.parametrize("key", list(DESIGNS))
def test_designs_are_32px_on_black_and_valid_payloads(key):
    image = design_image(key)
    for frame in image.frames:
        assert frame.size == (SIZE, SIZE) and frame.mode == "RGB"
        assert frame.getpixel((0, 0)) == (0, 0, 0) and frame.getbbox() is not None
    payload = image.station_payload()
    assert payload_check(payload) is None and payload["frameMs"] == FRAME_MS
    assert [f.tobytes() for f in from_payload(payload).frames] == [
        f.tobytes() for f in image.frames
    ]


def test_animated_designs_exist():
    assert design_image("battery").animated and design_image("heart").animated
    assert not design_image("bolt").animated


def test_short_name_is_still_long_name_scrolls_within_the_frame_limit():
    assert not name_image("Hi").animated
    long = name_image("Parking garage level 2, north side " * 3)
    assert long.animated and len(long.frames) <= MAX_FRAMES and long.notes
    assert long.frames[0].getbbox() is not None  # starts with the name visible
    assert name_image("   ").frames  # blank name: a placeholder, not an error


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda p: p.update(width=64), "width must be 32"),
        (lambda p: p.update(frameMs=50), "frameMs must be 100"),
        (lambda p: p.update(format="png"), "format must be 'rgb888'"),
        (lambda p: p.update(frames=[]), "frames must be a list"),
        (lambda p: p.update(frames=["***"]), "frame 0 is not base64"),
        (lambda p: p.update(frames=["AAAA"]), "frame 0 has 3 bytes"),
        (lambda p: p.update(frames=p["frames"] * (MAX_FRAMES + 1)), "frames must be a list"),
    ],
)
def test_malformed_payloads_are_named(change, problem):
    payload = design_image("bolt").station_payload()
    change(payload)
    assert problem in payload_check(payload)


def test_payload_must_be_an_object():
    assert payload_check([1, 2]) == "data must be a JSON object"
