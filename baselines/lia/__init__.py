"""LIA (Wang et al., ICLR 2022) baseline: our generator compatible with the official
checkpoints (``model``) and the method adapter (``adapter``)."""

from .adapter import LIAMethod
from .model import Generator, load_lia

__all__ = ["Generator", "LIAMethod", "load_lia"]
