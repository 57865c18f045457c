"""predict's overlays and class summary, without a network (the runs on a trained one are in
test_seg.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wsss_cli.data.io import read_image, voc_palette
from wsss_cli.data.overlay import OverlayWriter, class_name, legend_strip, overlay, overlay_path, tint
from wsss_cli.stages.predict import class_shares, format_summary, summarize
from wsss_cli.workdir import Layout

NAMES = ("background", "disc", "square")


def _scene() -> tuple[np.ndarray, np.ndarray]:
    """A grey 60 x 80 image; a 20 x 20 square of class 2 at rows and columns 20..39."""
    image = np.full((60, 80, 3), 100, np.uint8)
    label = np.zeros((60, 80), np.uint8)
    label[20:40, 20:40] = 2
    return image, label


def test_tint_blends_object_pixels_half_and_half_and_draws_the_boundary():
    image, label = _scene()
    out = tint(image, label)
    colour = voc_palette()[2]  # (0, 128, 0)
    np.testing.assert_array_equal(out[30, 30], (image[30, 30].astype(int) + colour + 1) // 2)
    np.testing.assert_array_equal(out[5, 5], image[5, 5])  # background keeps the image
    np.testing.assert_array_equal(out[0, 0], image[0, 0])
    np.testing.assert_array_equal(out[20, 30], colour)  # the object's rim in its colour
    np.testing.assert_array_equal(out[19, 30], voc_palette()[0])  # the background's in black
    assert (out[21:39, 21:39] != image[21:39, 21:39]).any(axis=-1).all()
    np.testing.assert_array_equal(tint(image, np.zeros_like(label)), image)


def test_overlay_is_the_tinted_image_above_a_legend_as_wide():
    image, label = _scene()
    picture = overlay(image, label, NAMES)
    strip = legend_strip(80, [("square", tuple(int(v) for v in voc_palette()[2]))])
    assert picture.shape == (60 + strip.shape[0], 80, 3)
    np.testing.assert_array_equal(picture[:60], tint(image, label))
    np.testing.assert_array_equal(picture[60:], strip)
    # the legend's swatch carries the class colour
    assert (strip.reshape(-1, 3) == voc_palette()[2]).all(axis=-1).any()
    # nothing but background: a strip saying so, no swatch
    empty = overlay(image, np.zeros_like(label), NAMES)
    np.testing.assert_array_equal(empty[:60], image)
    assert not (empty[60:].reshape(-1, 3) == voc_palette()[2]).all(axis=-1).any()


def test_legend_wraps_onto_more_rows_when_narrow():
    entries = [(f"class number {i}", tuple(int(v) for v in voc_palette()[i])) for i in range(1, 6)]
    one_row = legend_strip(200, entries[:1])
    wrapped = legend_strip(200, entries)
    assert one_row.shape[1] == wrapped.shape[1] == 200
    two_rows = legend_strip(200, entries[:3])
    assert one_row.shape[0] < two_rows.shape[0] < wrapped.shape[0]  # 1, 2, 3 rows at 2 a row
    assert wrapped.shape[0] - two_rows.shape[0] == two_rows.shape[0] - one_row.shape[0]
    assert legend_strip(200, []).shape == one_row.shape  # "background only": one row
    assert legend_strip(200, [("naïve", (128, 0, 0))]).shape[1] == 200  # non-ASCII drawn as '?'


def test_class_names_fall_back_to_class_index():
    assert class_name(NAMES, 2) == "square"
    assert class_name(NAMES, 7) == "class7"
    assert class_name((), 0) == "class0"


def test_overlay_writer_puts_a_jpeg_beside_the_png(tmp_path):
    image, label = _scene()
    png = tmp_path / "pred" / "a.b.png"
    assert overlay_path(png) == tmp_path / "pred" / "overlay" / "a.b.jpg"
    OverlayWriter(NAMES)(png, image, label)
    written = read_image(overlay_path(png))
    assert written.shape == overlay(image, label, NAMES).shape
    assert np.abs(written.astype(int) - overlay(image, label, NAMES)).mean() < 4  # JPEG
    assert sorted(p.name for p in (tmp_path / "pred" / "overlay").iterdir()) == ["a.b.jpg"]  # no temporary


def test_class_shares_are_percentages_largest_first():
    _, label = _scene()
    label[0, :8] = 9  # a class past the names
    shares = class_shares(label, NAMES)
    assert list(shares) == ["background", "square", "class9"]
    assert shares["square"] == pytest.approx(100 * 400 / 4800, abs=0.005)
    assert shares["class9"] == pytest.approx(100 * 8 / 4800, abs=0.005)
    assert sum(shares.values()) == pytest.approx(100, abs=0.01)


def test_summary_covers_the_ids_with_a_prediction(tmp_path):
    from wsss_cli.data.io import write_palette_png

    _, label = _scene()
    output = Layout(tmp_path).labels("pred/x")
    write_palette_png(output.path("b"), label)
    write_palette_png(output.path("a"), np.zeros_like(label))
    entries = summarize(output, ["a", "missing", "b"], NAMES)
    assert [e["id"] for e in entries] == ["a", "b"]
    assert entries[0] == {"id": "a", "size": [60, 80], "percent": {"background": 100.0}}


def test_printed_summary_stops_at_twenty_rows():
    entries = [{"id": f"img{i:02d}", "percent": {"background": 75.0, "disc": 25.0}} for i in range(23)]
    lines = format_summary(entries).splitlines()
    assert lines[0].split() == ["image", "classes", "(%", "of", "pixels)"]
    assert lines[2] == "img00  background 75.0, disc 25.0"
    assert len(lines) == 2 + 20 + 1 and lines[-1] == "... 3 more"
    assert [line.split()[0] for line in lines[2:-1]] == [f"img{i:02d}" for i in range(20)]
    assert len(format_summary(entries[:20]).splitlines()) == 22  # no "more" line
    assert all(line == line.rstrip() for line in lines)


def test_overlay_writer_pickles_for_the_worker_processes():
    import pickle

    writer = OverlayWriter(NAMES)
    assert pickle.loads(pickle.dumps(writer)) == writer
    assert isinstance(overlay_path(Path("x.png")), Path)
