"""Opening images and archives safely: the one function every image goes through (format allowlist,
decompression-bomb limit, truncation, EXIF orientation, mode conversion) and ZIP extraction with its checks.

May import: core.common.
"""
