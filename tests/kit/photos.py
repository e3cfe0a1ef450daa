"""Test photos made in code: a studio shot for "Find the subject" (the editor's AppTest and browser
tests), its PNG bytes, and what a browser test reads of the mask overlay on the shown photo."""
from __future__ import annotations

import io

import numpy as np

SIZE = (800, 600)                               # (width, height) of the studio shot
RED = (slice(150, 470), slice(200, 400))        # the product (rows, columns)
BLUE = (slice(300, 420), slice(600, 700))       # the object beside it
SHADOW = (300, 478)                             # (x, y): the middle of the product's cast shadow


def studio_shot() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """800x600 RGB: a red product on a white sweep with a soft grey shadow under it, and a blue
    object beside it (the auto subject takes both, not the shadow). Returns (rgb, the red
    product's truth, the blue object's truth), the truths HxW bool."""
    import cv2
    w, h = SIZE
    rgb = np.full((h, w, 3), 246, np.uint8)
    shade = np.zeros((h, w), np.float32)
    cv2.ellipse(shade, SHADOW, (150, 14), 0, 0, 360, 1.0, -1)
    shade = cv2.GaussianBlur(shade, (0, 0), 10)
    rgb = (rgb * (1 - 0.35 * shade[..., None])).astype(np.uint8)
    rgb[RED] = (170, 25, 30)
    rgb[BLUE] = (30, 60, 190)
    red, blue = np.zeros((h, w), bool), np.zeros((h, w), bool)
    red[RED], blue[BLUE] = True, True
    return rgb, red, blue


def png(rgb: np.ndarray) -> bytes:
    """The picture as PNG bytes (what an upload sends)."""
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def shown(img, size: tuple[int, int] = SIZE) -> np.ndarray:
    """The picture a browser shows in an <img> whose src is a data URL (the photo component), as
    RGB int16 at `size` (width, height). Waits for the <img> to have its picture: right after a
    page loads, the component may have drawn the element but not yet set its src."""
    import base64
    import re

    from PIL import Image
    from playwright.sync_api import expect
    expect(img).to_have_attribute("src", re.compile(r"^data:image/"))
    src = img.get_attribute("src")
    data = base64.b64decode(src.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB").resize(size), dtype=np.int16)


def tinted(picture: np.ndarray, original: np.ndarray, xy) -> bool:
    """The overlay changed the colour around (x, y): the mask covers it."""
    x, y = xy
    return float(np.abs(picture[y - 4:y + 5, x - 4:x + 5] - original[y - 4:y + 5, x - 4:x + 5]).mean()) > 12
