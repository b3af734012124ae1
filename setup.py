"""Builds the compiled parts of AuditSeal: every ``pipeline/native/*.pyx`` becomes an extension module.

Everything else is in pyproject.toml. The compiled modules are fast paths with pure-Python references
beside them (the unit tests compare the two byte for byte); they are built by ``pip install`` (and so by
``make venv``) with Cython and the system C compiler.
"""

import shutil
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_py import build_py


class BuildWithSchemas(build_py):
    """Ships ``schemas/*.avsc`` (the wire format's one source of truth, kept at the top of the checkout)
    inside the package as ``pipeline/wire/schemas/``, where :func:`pipeline.wire.catalog.schemas_dir` finds
    them in an installed wheel."""

    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "pipeline" / "wire" / "schemas"
        target.mkdir(parents=True, exist_ok=True)
        for schema in sorted(Path("schemas").glob("*.avsc")):
            shutil.copyfile(schema, target / schema.name)

# modules that call a system library directly (its headers are needed to build: OpenSSL's are Debian's libssl-dev)
LIBRARIES = {"merkle_native": ["crypto"], "ocsf_writer": ["crypto"]}

extensions = [
    Extension(f"pipeline.native.{source.stem}", [source.as_posix()], extra_compile_args=["-O2"],
              libraries=LIBRARIES.get(source.stem, []))
    for source in sorted(Path("pipeline/native").glob("*.pyx"))
]

setup(cmdclass={"build_py": BuildWithSchemas}, ext_modules=cythonize(extensions, language_level=3, compiler_directives={
    "boundscheck": False, "wraparound": False, "cdivision": True, "embedsignature": True,
}))
