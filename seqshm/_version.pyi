# Stub of the module Meson writes from _version.py.in (mypy reads the source tree).
__version__: str
