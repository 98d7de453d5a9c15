"""bitlut sim."""
