"""Image-classification studio: all logic, no Streamlit (a test enforces it).

The dashboard (``app.py`` + ``app_pages/``) and the command line (``python -m core``) call the same
functions in these modules.
"""

import os as _os
import sys as _sys

# Arrow's default allocator (mimalloc) keeps what it frees for itself: every parquet table read or written left its
# memory held, where pandas and numpy could not reuse it. With the C library's allocator they can. Measured with
# `ARROW_DEFAULT_MEMORY_POOL=mimalloc` (or `system`, this default) `/usr/bin/time -v python -m core scan|dedup DIR`
# on the scale bench's 200,000 images, caches warm: scan peaked at 261-267 MB with mimalloc, 218-222 MB without;
# the duplicate search at 425 MB, 377 MB without. Read when Arrow first allocates; pandas imports pyarrow, so set it
# here, before any module of the studio imports pandas.
_os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
if "pyarrow" in _sys.modules:  # imported before the studio (a host program): switch its pool directly
    import pyarrow as _pa

    _pa.set_memory_pool(_pa.system_memory_pool())
