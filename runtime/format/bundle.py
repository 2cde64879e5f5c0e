"""A bundle directory, read and written: the manifest plus artifacts whose sha256 the manifest pins.

Readers call `open_bundle`, which refuses a bundle with a missing or altered
artifact before anything runs it. The exporter calls `write_bundle`, which
builds the directory beside its destination and renames it into place.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from runtime.format.files import atomic_directory, sha256_of
from runtime.format.fields import BundleError
from runtime.format.manifest import MANIFEST_FILE, Artifact, Manifest, read_manifest

__all__ = ["open_bundle", "write_bundle", "artifact_table", "write_manifest"]


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


def artifact_table(directory: Path) -> dict[str, Artifact]:
    """Every file in `directory` but the manifest, with its sha256 and size."""
    return {
        path.name: Artifact(sha256_of(path), path.stat().st_size)
        for path in sorted(directory.iterdir())
        if path.is_file() and path.name != MANIFEST_FILE
    }


def write_manifest(directory: Path, manifest: Manifest) -> None:
    (directory / MANIFEST_FILE).write_text(manifest.to_json() + "\n")


def write_bundle(out: Path, fill: Callable[[Path], None], *, force: bool = False) -> None:
    """Call `fill(staging_dir)`, then move the staging directory to `out`; nothing appears at `out` on failure."""
    atomic_directory(out, fill, replace=force)
