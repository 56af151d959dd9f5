"""A small Django shop on pgqueue: ``python -m examples.django_shop`` (see examples/README.md)."""
