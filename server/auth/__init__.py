"""Staff accounts, roles, password hashing, dashboard login."""
