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
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e ".[$extras]"
    rm -f .venv/.installed-*
    touch "$stamp"
fi
export PATH="$root/.venv/bin:$PATH"
