"""bitlut verif."""
