"""Write the docs' registry tables from the registries themselves: python scripts/docs_tables.py [--check]

Tables sit between `<!-- registry:NAME -->` and `<!-- /registry:NAME -->` in
the files below. `--check` rewrites nothing and exits 1 if a table is stale;
the test suite runs it, so the docs cannot drift from the code.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runtime.backends import BACKENDS  # noqa: E402
from runtime.rules import RULES  # noqa: E402
from runtime.format.targets import TARGETS  # noqa: E402
from trainer.families import FAMILIES  # noqa: E402

DOCS = (ROOT / "docs" / "bundle.md", ROOT / "docs" / "architecture.md")


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join([*lines, *("| " + " | ".join(row) + " |" for row in rows)])


def tables() -> dict[str, str]:
    return {
        "targets": _table(
            ("target", "backends (device default first)", "parity verified here by", "precisions (default first)",
             "what it writes"),
            [(f"`{t.name}`", ", ".join(t.backends), t.verify_backend or "none (needs its device)",
              ", ".join(t.precisions), t.description)
             for t in TARGETS.values()],
        ),
        "rules": _table(
            ("rule", "module", "since version", "Session.run takes", "budgets answered by", "dispatch"),
            [(f"`{r.name}`", f"`runtime/rules/{r.name}.py`", str(r.since), "scale" if r.takes_scale else "-",
              "the bundle's own costs" if r.takes_budget else "the device's latency table (`runtime/serving/budgets.py`)",
              r.summary)
             for r in RULES.values()],
        ),
        "families": _table(
            ("family", "trainer module", "split", "training phases", "backbones", "--init skips"),
            [(f"`{f.name}`", f"`trainer/families/{f.name}.py`", f"`{f.split.replace('.', '/')}.py`", ", ".join(f.phases),
              ", ".join(f"`{b}`" for b in f.backbones), ", ".join(f.init_skips) or "nothing")
             for f in FAMILIES.values()],
        ),
        "backends": _table(
            ("backend", "module", "install on a device"),
            [(f"`{name}`", f"`{b.module.replace('.', '/')}.py`", b.install) for name, b in BACKENDS.items()],
        ),
    }


def render(text: str, generated: dict[str, str]) -> str:
    def fill(match: re.Match) -> str:
        name = match.group(1)
        if name not in generated:
            raise KeyError(f"no registry table named {name!r}; known: {sorted(generated)}")
        return f"<!-- registry:{name} -->\n{generated[name]}\n<!-- /registry:{name} -->"

    return re.sub(r"<!-- registry:(\w+) -->.*?<!-- /registry:\1 -->", fill, text, flags=re.S)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a table is stale, writing nothing")
    args = parser.parse_args(argv)
    generated, stale = tables(), []
    for path in DOCS:
        text = path.read_text()
        fresh = render(text, generated)
        if fresh != text:
            stale.append(path)
            if not args.check:
                path.write_text(fresh)
    if args.check and stale:
        print(f"stale registry tables in {[str(p.relative_to(ROOT)) for p in stale]}; run python scripts/docs_tables.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
