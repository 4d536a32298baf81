"""`python -m facelab` runs the CLI."""

from facelab.cli.app import main

main()
