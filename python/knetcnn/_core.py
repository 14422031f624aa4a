"""The compiled core, loaded once (see _loader)."""

from ._loader import load_core

core = load_core()
