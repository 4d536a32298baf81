"""The `facelab` command line: parsing, calling the library, printing. Nothing else."""
