"""``python -m mediasearch``."""

from mediasearch.cli import main

main()
