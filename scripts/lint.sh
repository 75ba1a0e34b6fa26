#!/usr/bin/env bash
# Lint and type-check: ruff (style, imports, bugbear, pyupgrade) and mypy.
set -euo pipefail
cd "$(dirname "$0")/.."
ruff check mediasearch tests scripts
ruff format --check mediasearch tests scripts || true
mypy mediasearch
