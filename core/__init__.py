"""Backdrop engine: plain Python, never imports streamlit.

Conventions everywhere: images are RGB uint8 numpy arrays shaped HxWx3; masks are HxW uint8 with
255 = subject (or HxW bool where stated); points are (x, y) in pixels of the original image.
"""
