"""The supervisor console (issue 15): read-side questions across cases, visits, proof
of life and payments for one area and the areas below it, and the tables that pages
show and export. Aggregates in SQL, always scoped to the asking user's area.
"""
