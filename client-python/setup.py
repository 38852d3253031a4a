"""Generates the gRPC stubs from the repository's proto/ when the package is built.

The .proto file is the single source of truth (proto/proto/switchyard.proto); the stubs
land in switchyard/_proto/ inside the build tree, never in the source tree. Set
SWITCHYARD_PROTO to build from a copy of the .proto elsewhere.
"""

import os
import pathlib
import shutil
import tempfile

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = pathlib.Path(__file__).resolve().parent
PROTO = pathlib.Path(
    os.environ.get("SWITCHYARD_PROTO", HERE.parent / "proto" / "proto" / "switchyard.proto")
)


class BuildWithStubs(build_py):
    def run(self):
        super().run()
        from grpc_tools import protoc  # build requirement

        if not PROTO.is_file():
            raise RuntimeError(f"{PROTO} not found: build from the Switchyard repository")
        out = pathlib.Path(self.build_lib) / "switchyard" / "_proto"
        out.mkdir(parents=True, exist_ok=True)
        # Placing the .proto at switchyard/_proto/ under a temporary include root makes
        # the generated modules import each other as switchyard._proto.*.
        with tempfile.TemporaryDirectory() as tmp:
            nested = pathlib.Path(tmp) / "switchyard" / "_proto"
            nested.mkdir(parents=True)
            shutil.copy(PROTO, nested / "switchyard.proto")
            well_known = pathlib.Path(protoc.__file__).parent / "_proto"
            code = protoc.main(
                [
                    "grpc_tools.protoc",
                    f"-I{tmp}",
                    f"-I{well_known}",
                    f"--python_out={self.build_lib}",
                    f"--grpc_python_out={self.build_lib}",
                    "switchyard/_proto/switchyard.proto",
                ]
            )
        if code != 0:
            raise RuntimeError(f"protoc failed on {PROTO} (exit {code})")
        (out / "__init__.py").touch()


setup(cmdclass={"build_py": BuildWithStubs})
