"""Objections from the public case page (routes of the ``public`` blueprint)."""
