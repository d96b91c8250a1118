"""The package version, importable from every layer without importing the package's public API; and the
installed version of another package."""

from importlib import metadata

__version__ = "0.1.0"


def package_version(name: str) -> str | None:
    """The installed version of the distribution ``name``, or None where it is not installed."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
