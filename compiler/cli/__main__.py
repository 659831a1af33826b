"""``python -m compiler.cli`` runs the ``tortie`` command."""

from compiler.cli import run

run()
