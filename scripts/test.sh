#!/usr/bin/env bash
# The test suite (slow tests excluded; add `-m slow` to run only those).
source "$(dirname "${BASH_SOURCE[0]}")/venv.sh"
exec python -m pytest "$@"
