"""SMART Studio's Qt application, split by feature (editor, transport, midi, files)."""

from studio._compat import make_singletons_immortal

make_singletons_immortal()
