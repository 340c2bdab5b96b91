"""Every default of the protocol, read from its schemas: written once, in `protocol/`.

A default lives in the schema (`"default"` on a shared definition of
`protocol/schemas/common.schema.json`, such as `Threshold`, or on a method's own parameter), and
the daemon, the Python API, the command line and the extension (through the generated
TypeScript) all read it from there. `with_defaults` fills a request's missing parameters.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lmscope.protocol.files import SCHEMAS, method_spec, resolve

_COMMON = SCHEMAS["common.schema.json"]


def shared_default(name: str) -> Any:
    """The default of the shared definition `name` in common.schema.json (KeyError if none)."""
    return _COMMON["$defs"][name]["default"]


def param_defaults(method: str) -> dict[str, Any]:
    """The default of every optional top-level parameter of a request that has one, following
    `$ref`s (a `default` beside the `$ref` wins over the referenced definition's)."""
    schema = SCHEMAS[method_spec(method, "request").params_schema]
    required = set(schema.get("required", ()))
    found: dict[str, Any] = {}
    for name, prop in schema.get("properties", {}).items():
        if name in required:
            continue
        if "default" in prop:
            found[name] = prop["default"]
        elif "$ref" in prop:
            target = resolve(prop, schema)
            if "default" in target:
                found[name] = target["default"]
    return found


def with_defaults(method: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Valid request params with the schema's top-level defaults filled in, so a default is
    written once (in the schema) rather than again in each handler."""
    return {**param_defaults(method), **(params or {})}


THRESHOLD: float = shared_default("Threshold")
"""τ a route is shown at when nobody chose one (0.04)."""
MIN_THRESHOLD: float = shared_default("MinThreshold")
"""The smallest τ a trace answers by default (0.01)."""
THRESHOLD_MODE: str = shared_default("ThresholdMode")
DETAIL: str = shared_default("DetailScope")
TOKEN: int = shared_default("TokenPosition")
DEVICE: str = shared_default("DeviceRequest")
PREPEND_BOS: bool = param_defaults("lmscope/trace")["prependBos"]
NEURON_PAGE: int = param_defaults("lmscope/ffnNeurons")["limit"]
PROJECTION_KIND: str = param_defaults("lmscope/projection")["kind"]

# Closed sets the command line offers, from the same schemas.
DTYPES: tuple[str, ...] = tuple(_COMMON["$defs"]["Dtype"]["enum"])
DETAIL_SCOPES: tuple[str, ...] = tuple(_COMMON["$defs"]["DetailScope"]["enum"])
DEVICE_MAP_PLANS: tuple[str, ...] = tuple(
    SCHEMAS[method_spec("lmscope/loadModel", "request").params_schema]["properties"]["deviceMap"][
        "enum"
    ]
)
