"""Compiled fast paths (Cython), each beside the pure-Python reference it must agree with byte for byte.

Built by ``pip install`` (``make venv``) from the ``*.pyx`` files here; see setup.py.
"""
