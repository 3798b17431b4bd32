"""Monthly payments: what each household is paid, suspended months and back-pay."""
