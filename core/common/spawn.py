"""Process pools that do not run the dashboard's page again in every child.

``multiprocessing``'s "spawn" start method imports the parent's ``__main__`` in each child. Under ``streamlit run``
the running page *is* ``__main__`` (Streamlit executes each script as a module of that name, with its ``__file__``),
so every worker of a preparation sweep started from the Scaling page ran the Scaling page again, top to bottom,
without a session: the ~280 "missing ScriptRunContext" warnings in the server log during one sweep. While the pool
starts its processes, ``__main__`` is a bare stand-in with neither ``__spec__`` nor ``__file__``, and the children
import nothing but the modules of the function they run.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def children_skip_main() -> Iterator[None]:
    """Within it, processes started by "spawn" (or "forkserver") do not import the parent's ``__main__`` script."""
    main = sys.modules.get("__main__")
    named = getattr(getattr(main, "__spec__", None), "name", None)
    if main is None or named or not getattr(main, "__file__", None):  # a module run by name re-imports cleanly
        yield
        return
    sys.modules["__main__"] = types.ModuleType("__main__")  # no __file__, no __spec__: nothing to re-run
    try:
        yield
    finally:
        sys.modules["__main__"] = main
