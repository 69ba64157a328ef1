"""`python -m trainlint` runs the CLI."""

from trainlint.cli import main

if __name__ == "__main__":  # guarded: process-pool workers may import this module
    main()
