#!/usr/bin/env bash
# Lint and type-check: ruff (style, imports, bugbear, pyupgrade), mypy, and the import contracts
# (layers, front ends over the use-case layer, no cycles: see [tool.importlinter] in pyproject.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
ruff check mediasearch tests scripts
ruff format --check mediasearch tests scripts || true
mypy mediasearch
lint-imports
