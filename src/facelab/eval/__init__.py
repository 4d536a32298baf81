"""Measured quality of a swap (`facelab eval`): identity, pose, expression, jitter,
sharpness, untouched background; one module per measure, `run` wires them, `report` draws.
`controls` makes the known-answer "results" the measures are tested and benchmarked on."""
