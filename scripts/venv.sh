# Create or reuse .venv at the repository root and install the project into it.
# Sourced by demo.sh and test.sh; reinstalls only when pyproject.toml or this script changes.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python3 -m venv .venv 2>/dev/null || [ -x .venv/bin/python ] || python3 -m venv .venv
# A developer gets everything: the base install is only a device's runtime.
extras="train,export,dev"
stamp=.venv/.installed-$(cat pyproject.toml scripts/venv.sh | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
    echo "setting up .venv (first run installs torch, executorch, onnxruntime, coremltools: several minutes)" >&2
    # pip's and the build backend's notices go to a log, shown only if the install fails.
    if ! { .venv/bin/python -m pip install --upgrade pip && .venv/bin/python -m pip install -e ".[$extras]"; } \
        > .venv/install.log 2>&1; then
        cat .venv/install.log >&2
        echo "setting up .venv failed (log above, kept in .venv/install.log)" >&2
        exit 1
    fi
    rm -f .venv/.installed-*
    touch "$stamp"
fi
export PATH="$root/.venv/bin:$PATH"
