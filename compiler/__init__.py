"""bitlut compiler."""
