"""The package version, in a module that imports nothing (deploy metadata records it)."""
__version__ = "0.1.0"
