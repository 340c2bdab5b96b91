"""One build step beyond pyproject.toml: ship `protocol/` inside the wheel.

The protocol (method table, JSON Schemas, the trace file's schema) is written once, at the
repository root, for both the daemon and the extension. A wheel carries a copy as package data,
`lmscope/protocol/spec/`, where `lmscope.protocol.files` looks first; a checkout or an editable
install reads `protocol/` itself, so no copy is made for those.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

PROTOCOL = Path(__file__).resolve().parent / "protocol"
SHIPPED = ("methods.json", "lmtrace.schema.json", "vocabulary.json", "README.md", "schemas/*.schema.json")


class BuildWithProtocol(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "lmscope" / "protocol" / "spec"
        for pattern in SHIPPED:
            for source in sorted(PROTOCOL.glob(pattern)):
                copy = target / source.relative_to(PROTOCOL)
                copy.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, copy)


setup(cmdclass={"build_py": BuildWithProtocol})
