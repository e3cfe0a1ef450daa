"""The catalogue flags on the command line (a real `python -m core` process): --auto, --preset
with an explicit flag on top, the batch's review list, one-line refusals."""
from __future__ import annotations

import numpy as np
from cli_kit import assert_one_line_error, cli
from PIL import Image

from bench.catalogue import make_shot
from core.images import save_image


def test_batch_auto_preset_frames_every_photo_and_lists_the_unsure(tmp_path):
    shots = tmp_path / "shots"
    shots.mkdir()
    for i in range(2):
        save_image(make_shot(i, (400, 300)).image, shots / f"s{i}.jpg")
    save_image(np.full((300, 400, 3), 250, np.uint8), shots / "blank.png")
    proc = cli("batch", shots, "--out", tmp_path / "out", "--auto", "--preset", "square-white",
               "--frame", "320x320", "--review-below", "1.01", "--no-history", check=False)
    assert proc.returncode == 1                                   # the blank photo: one line
    assert "blank.png: no subject found" in proc.stderr
    assert "to review (2" in proc.stdout and "s0.jpg" in proc.stdout
    out = np.asarray(Image.open(tmp_path / "out" / "s0.png"))
    assert out.shape == (320, 320, 3) and (out[0, 0] == 255).all()    # the flag beat the preset's size
    proc = cli("replace", shots / "s0.jpg", "--out", tmp_path / "x.png", "--auto", "--preset", "nope",
               check=False)
    assert_one_line_error(proc, "unknown preset")
    proc = cli("replace", shots / "s0.jpg", "--out", tmp_path / "x.png", "--auto", "--frame", "big",
               "--background", "transparent", check=False)
    assert_one_line_error(proc, "WIDTHxHEIGHT")
