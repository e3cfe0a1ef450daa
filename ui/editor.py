"""Former home of the editor logic, now split by idea: ui/photo.py (intake, preview, embedding),
ui/prompts.py (clicks, box, masks, candidate), ui/canvas.py (the clickable image and its
overlay), ui/job.py (request, run, results). These names remain only for callers not yet moved
(ui/history.py, bench/app_rerun.py); new code imports the modules above.
"""
from ui.canvas import (CANVAS_JPEG_QUALITY, apply_canvas_value, candidate_thumbnails, canvas_image,
                       canvas_rgb, preview_mask)
from ui.photo import load_photo, load_upload, preview_size
from ui.prompts import segment_preview

__all__ = ["CANVAS_JPEG_QUALITY", "apply_canvas_value", "candidate_thumbnails", "canvas_image",
           "canvas_rgb", "preview_mask", "load_photo", "load_upload", "preview_size", "segment_preview"]
