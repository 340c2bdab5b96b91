"""The lmscope wire protocol, Python side: the method table, validation at the edge, defaults.

`protocol/` at the repository root is the contract, written once (see `protocol.files`); the
TypeScript types are generated from the same files (`protocol/generate-ts.mjs`).

- `files`: where the protocol's files are (the checkout's, or a wheel's packaged copy), the
  method table and the schemas;
- `validation`: requests, results, notifications and `initialize` options against the schemas;
- `defaults`: every default, read from the schemas;
- `vocabulary`: the names, colours, node sizes and token display rules every view shares
  (`protocol/vocabulary.json`).

It imports neither pygls nor the engine, so tests and tools can use it alone.
"""

from lmscope.protocol.defaults import param_defaults, shared_default, with_defaults
from lmscope.protocol.files import (
    ERROR_CODES,
    INITIALIZATION_OPTIONS_SCHEMA,
    METHOD_PREFIX,
    METHODS,
    PROTOCOL_DIR,
    PROTOCOL_VERSION,
    README,
    REGISTRY,
    SCHEMAS,
    SCHEMAS_DIR,
    TRACE_SCHEMA,
    MethodSpec,
    capabilities,
)
from lmscope.protocol.validation import (
    ParamsError,
    ProtocolError,
    ProtocolVersionError,
    validate_initialization_options,
    validate_notification,
    validate_params,
    validate_result,
)

__all__ = [
    "ERROR_CODES",
    "INITIALIZATION_OPTIONS_SCHEMA",
    "METHODS",
    "METHOD_PREFIX",
    "PROTOCOL_DIR",
    "PROTOCOL_VERSION",
    "README",
    "REGISTRY",
    "SCHEMAS",
    "SCHEMAS_DIR",
    "TRACE_SCHEMA",
    "MethodSpec",
    "ParamsError",
    "ProtocolError",
    "ProtocolVersionError",
    "capabilities",
    "param_defaults",
    "shared_default",
    "validate_initialization_options",
    "validate_notification",
    "validate_params",
    "validate_result",
    "with_defaults",
]
