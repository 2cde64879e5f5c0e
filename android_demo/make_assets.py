"""Put a bundle, and sample images, into the app's assets: the app's offline sample.

    python android_demo/make_assets.py --bundle bundles/drnet-et [--samples 8] [--cifar10 ../shared/data/cifar10]

The bundle must be an ExecuTorch one, and is validated (fields and sha256)
before it is copied. Sample images come from the digits test split (the
demo's data set) or, with --cifar10, from CIFAR-10's test split.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runtime.format.bundle import open_bundle  # noqa: E402
from runtime.format.files import atomic_directory  # noqa: E402

ASSETS = Path(__file__).resolve().parent / "app" / "src" / "main" / "assets"


def copy_bundle(bundle: Path) -> None:
    manifest = open_bundle(bundle)
    if manifest.target != "executorch":
        raise ValueError(f"{bundle}: a {manifest.target} bundle; the app runs ExecuTorch bundles (--target executorch)")

    def fill(staging: Path) -> None:
        for file in ["manifest.json", *manifest.artifacts]:
            shutil.copyfile(bundle / file, staging / file)

    atomic_directory(ASSETS / "bundle", fill, replace=True)


def write_samples(count: int, cifar10: Path | None) -> None:
    from PIL import Image

    def fill(staging: Path) -> None:
        if cifar10 is None:
            from trainer.data import digits_canvas

            images, labels = digits_canvas("test")
            for i in range(count):
                Image.fromarray(images[i]).save(staging / f"digits-{i:02d}-{labels[i]}.png")
            return
        classes = sorted(p for p in (cifar10 / "test").iterdir() if p.is_dir())
        if not classes:
            raise FileNotFoundError(f"{cifar10 / 'test'}: no class folders")
        for i in range(count):
            source = sorted(classes[i % len(classes)].glob("*.jpg"))[i // len(classes)]
            shutil.copyfile(source, staging / f"cifar10-{i:02d}-{source.parent.name}.jpg")

    atomic_directory(ASSETS / "samples", fill, replace=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, help="an ExecuTorch bundle (python -m exporter --target executorch)")
    parser.add_argument("--samples", type=int, default=8, help="how many sample images (default: %(default)s)")
    parser.add_argument("--cifar10", type=Path, help="take samples from this CIFAR-10 root instead of digits")
    args = parser.parse_args(argv)
    try:
        if args.bundle:
            copy_bundle(args.bundle)
        write_samples(args.samples, args.cifar10)
    except (ValueError, FileNotFoundError) as error:
        print(f"make_assets: error: {error}", file=sys.stderr)
        return 2
    print(f"assets in {ASSETS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
