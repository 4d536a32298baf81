"""`python -m facelab` runs the CLI."""

from facelab.cli.app import main

if __name__ == "__main__":  # worker processes (face extraction) import this module too
    main()
