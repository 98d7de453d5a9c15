"""bitlut: the command line and what every package shares (user errors, atomic writes)."""
