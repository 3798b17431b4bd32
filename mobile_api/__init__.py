"""Everything a tablet or a phone talks to: the JSON API under /api/v1 and the
recipient's mobile page under /m/. Depends on ``server``, never the reverse.
"""
