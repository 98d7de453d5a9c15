"""bitlut rtl."""
