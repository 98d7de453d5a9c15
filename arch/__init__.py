"""bitlut arch."""
