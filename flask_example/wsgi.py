"""The WSGI entry point for gunicorn: ``flask_example.wsgi:app``."""

from flask_example import create_app

app = create_app()
