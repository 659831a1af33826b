"""Build hook for the optional C accelerator; everything else is in pyproject.toml.

``compiler/frontend/_yaml_lines.c`` is the YAML line reader of ``compiler/frontend/yaml_fast.py``
in C. It is ``optional``: without a C compiler the install goes on and Tortie uses the Python
reader (same results, slower parse).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "compiler.frontend._yaml_lines",
            sources=["compiler/frontend/_yaml_lines.c"],
            optional=True,
        )
    ]
)
