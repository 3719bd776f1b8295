"""Operator CLI (Typer + Rich).  ``dispatcher.cli.app:main`` is the console script."""
