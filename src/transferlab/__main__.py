"""``python -m transferlab`` (what torchrun launches)."""

from .apps.cli import main

if __name__ == "__main__":
    main()
