"""The C extension of readside: the native Avro reader. Everything else about
the package is in pyproject.toml.

The extension is optional: without a C compiler (or Python's headers) the
install goes on without it, and ``pipeline.source.avro_reader`` uses the
reader it generates in Python.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "pipeline.source._avroread",
            ["pipeline/source/_avroread.c"],
            optional=True,
        )
    ]
)
