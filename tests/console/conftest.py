from tests.console.planting import clock  # noqa: F401  (a fixture: the fixed clock)
