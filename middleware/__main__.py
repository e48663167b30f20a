"""``python -m ostracon`` runs the command line."""

from .cli import app

app()
