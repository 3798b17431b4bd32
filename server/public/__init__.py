"""The public transparency page and open data (公示): every case's status, nobody identifiable.

Everything published is read from a snapshot (``snapshot.py``) built by allow-list
queries of this package only; the views never touch the case tables.
"""
