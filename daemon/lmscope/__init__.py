"""lmscope: how a transformer language model reaches a prediction (Information Flow Routes).

import lmscope
t = lmscope.trace("When Mary and John went to the store, John gave a drink to")
route = t.route(token=-1, threshold=0.04)
t.save("ioi.lmtrace"); lmscope.load_trace("ioi.lmtrace")
"""

from lmscope.__about__ import __version__
from lmscope.errors import LmscopeError

__all__ = [
    "LmscopeError",
    "__version__",
    "import_json",
    "load_model",
    "load_run",
    "load_trace",
    "trace",
]


def __getattr__(name: str):
    # Lazy: `import lmscope` stays cheap (no torch import) for the CLI's fast paths.
    if name in ("trace", "load_trace", "load_model", "import_json", "load_run"):
        from lmscope import api

        return getattr(api, name)
    if name == "Trace":
        from lmscope.traces.trace import Trace

        return Trace
    raise AttributeError(f"module 'lmscope' has no attribute {name!r}")
