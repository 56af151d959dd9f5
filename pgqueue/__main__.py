"""``python -m pgqueue``: the same as the ``pgqueue`` command."""

from .cli import main

if __name__ == "__main__":
    main()
