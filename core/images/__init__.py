"""Images in and out of Backdrop, one idea per module:

- `core.images.load`: `load_image` -> `LoadedImage` (RGB uint8 HxWx3 + optional HxW alpha, EXIF
  orientation applied, sRGB), the format allow-list, the pixel cap (`MAX_PIXELS`), HEIC through
  pillow-heif, and `content_hash`, the key of every cache and of the history's files;
- `core.images.preview`: `make_preview` -> `Preview`, the downscaled display copy and the exact
  mapping of a click on it back to the original pixel;
- `core.images.encode`: `encode_png` / `encode_jpeg` / `encode_webp`, `save_image`, and the one PNG
  text-chunk writer (`encode_png(text=...)`, `png_with_text`).

Import from here (`from core.images import load_image`); the names below are the public API.
"""
from core.images.encode import (encode_jpeg, encode_png, encode_webp, png_chunk, png_with_text,
                                save_image)
from core.images.load import (MAX_PIXELS, MAX_SIDE, SUPPORTED, LoadedImage, content_hash, load_image,
                             load_mask)
from core.images.preview import Preview, make_preview

__all__ = ["MAX_PIXELS", "MAX_SIDE", "SUPPORTED", "LoadedImage", "Preview", "content_hash",
           "encode_jpeg", "encode_png", "encode_webp", "load_image", "load_mask", "make_preview", "png_chunk",
           "png_with_text", "save_image"]
