"""bitlut reports."""
