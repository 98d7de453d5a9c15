"""bitlut quant."""
