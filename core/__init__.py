"""Image-classification studio: all logic, no Streamlit (a test enforces it).

The dashboard (``app.py`` + ``app_pages/``) and the command line (``python -m core``) call the same
functions in these modules.
"""

import os as _os
import sys as _sys

# Arrow's default allocator (mimalloc) keeps what it frees for itself: every parquet table read or written left its
# memory held, so reading a 200,000-row cache cost ~80 MB that nothing else could reuse and the scan's peak grew as
# N^0.25. With the C library's allocator, freed Arrow buffers serve pandas and numpy next (bench.bench_scale: the
# cached scan of 200,000 images peaked at 234 MB instead of 315). Read when Arrow first allocates; pandas imports
# pyarrow, so set it here, before any module of the studio imports pandas.
_os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
if "pyarrow" in _sys.modules:  # imported before the studio (a host program): switch its pool directly
    import pyarrow as _pa

    _pa.set_memory_pool(_pa.system_memory_pool())
