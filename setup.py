"""Builds the compiled parts of AuditSeal: every ``pipeline/native/*.pyx`` becomes an extension module.

Everything else is in pyproject.toml. The compiled modules are fast paths with pure-Python references
beside them (the unit tests compare the two byte for byte); they are built by ``pip install`` (and so by
``make venv``) with Cython and the system C compiler.
"""

from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension(f"pipeline.native.{source.stem}", [source.as_posix()], extra_compile_args=["-O2"])
    for source in sorted(Path("pipeline/native").glob("*.pyx"))
]

setup(ext_modules=cythonize(extensions, language_level=3, compiler_directives={
    "boundscheck": False, "wraparound": False, "cdivision": True, "embedsignature": True,
}))
