"""One module per rule; `trainlint.registry` lists them."""
