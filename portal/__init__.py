"""Testimony Portal: anonymous testimony intake that encrypts on arrival."""

__version__ = "0.1.0"
