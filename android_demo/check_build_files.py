"""Check what of the Gradle project can be checked without Gradle (Maven and Google's repositories are unreachable).

    python android_demo/check_build_files.py [--kotlinc PATH]

- every `libs.…` accessor in the build scripts names an entry of gradle/libs.versions.toml;
- the build scripts and the app's Kotlin sources parse (kotlinc, syntax errors only:
  without Gradle's and Android's classes every reference is unresolved);
- the manifest and resources are well-formed XML;
- the Gradle wrapper is pinned: distribution URL and sha256, and the wrapper jar is Gradle 8.13's.

It does not build the APK; README.md says what was verified here and what was not.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ElementTree
from pathlib import Path

DEMO = Path(__file__).resolve().parent
WRAPPER_JAR_SHA256 = "81a82aaea5abcc8ff68b3dfcb58b3c3c429378efd98e7433460610fecd7ae45f"  # Gradle 8.13's gradle-wrapper.jar
ACCESSOR = re.compile(r"""\blibs\.((?:plugins\.|versions\.)?[a-z][a-zA-Z0-9.]*?)(?:\.get\(\))?(?=[\s),}"])""")


def catalog_accessors() -> set[str]:
    """Gradle's accessors for the version catalog: '-', '_' and '.' in an alias all become '.'."""
    catalog = tomllib.loads((DEMO / "gradle" / "libs.versions.toml").read_text())
    name = lambda alias: re.sub(r"[-_.]", ".", alias)  # noqa: E731
    return (
        {name(a) for a in catalog.get("libraries", {})}
        | {f"plugins.{name(a)}" for a in catalog.get("plugins", {})}
        | {f"versions.{name(a)}" for a in catalog.get("versions", {})}
    )


def check_accessors(problems: list[str]) -> None:
    known = catalog_accessors()
    for script in sorted(DEMO.glob("**/*.gradle.kts")):
        for accessor in ACCESSOR.findall(script.read_text()):
            if accessor not in known:
                problems.append(f"{script.relative_to(DEMO)}: libs.{accessor} is not in gradle/libs.versions.toml")


def check_syntax(kotlinc: str, problems: list[str]) -> None:
    sources = sorted(DEMO.glob("**/*.gradle.kts")) + sorted((DEMO / "app" / "src").glob("**/*.kt"))
    sources = [s for s in sources if "build" not in s.relative_to(DEMO).parts]
    result = subprocess.run(
        [kotlinc, "-language-version", "2.0", "-Xsuppress-version-warnings", "-d", str(DEMO / "build" / "syntax"), *map(str, sources)],
        capture_output=True, text=True,
    )
    problems += [line for line in result.stderr.splitlines() if "syntax error" in line]


def check_xml(problems: list[str]) -> None:
    for path in sorted((DEMO / "app" / "src" / "main").glob("**/*.xml")):
        try:
            ElementTree.parse(path)
        except ElementTree.ParseError as error:
            problems.append(f"{path.relative_to(DEMO)}: {error}")


def check_wrapper(problems: list[str]) -> None:
    properties = dict(
        line.split("=", 1) for line in (DEMO / "gradle" / "wrapper" / "gradle-wrapper.properties").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    if "gradle-8.13-bin.zip" not in properties.get("distributionUrl", ""):
        problems.append("gradle-wrapper.properties: distributionUrl is not Gradle 8.13")
    if not re.fullmatch(r"[0-9a-f]{64}", properties.get("distributionSha256Sum", "")):
        problems.append("gradle-wrapper.properties: no distributionSha256Sum pins the distribution")
    jar = hashlib.sha256((DEMO / "gradle" / "wrapper" / "gradle-wrapper.jar").read_bytes()).hexdigest()
    if jar != WRAPPER_JAR_SHA256:
        problems.append(f"gradle/wrapper/gradle-wrapper.jar: sha256 {jar} is not Gradle 8.13's wrapper")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kotlinc", help="a kotlinc for the syntax check (android_demo/test.sh passes its own)")
    args = parser.parse_args(argv)
    problems: list[str] = []
    check_accessors(problems)
    check_xml(problems)
    check_wrapper(problems)
    if args.kotlinc:
        check_syntax(args.kotlinc, problems)
    for problem in problems:
        print(problem, file=sys.stderr)
    checked = "catalog accessors, XML, wrapper pin" + (", Kotlin syntax" if args.kotlinc else "")
    print(f"build files ({checked}): {'ok' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
