"""The client's optional C accelerator; everything else is in pyproject.toml.

``optional=True``: without a C compiler the install still succeeds and the client runs its
pure-Python paths (``streamrec.applog.encoder``), which produce the same bytes.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("streamrec.applog._native", ["streamrec/applog/_native.c"], optional=True,
                             extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"])])
