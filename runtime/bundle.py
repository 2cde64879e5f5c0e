"""Open a bundle directory: a validated manifest whose artifacts match their sha256."""

from __future__ import annotations

import hashlib
from pathlib import Path

from runtime.manifest import BundleError, Manifest, read_manifest

__all__ = ["sha256_of", "open_bundle"]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def open_bundle(bundle: str | Path) -> Manifest:
    """The bundle's manifest, after checking that every artifact exists and is intact."""
    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    for file, artifact in manifest.artifacts.items():
        path = bundle / file
        if not path.is_file():
            raise BundleError(f"{path}: artifact listed in the manifest is missing")
        actual = sha256_of(path)
        if actual != artifact.sha256:
            raise BundleError(
                f"{path}: sha256 {actual} does not match the manifest's {artifact.sha256}; the file is corrupt"
            )
    return manifest
