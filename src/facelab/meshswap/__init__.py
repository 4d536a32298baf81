"""meshswap: a model family that shows src's own pixels instead of learning a face.

For each dst face: the src faces nearest in pose and expression (`retrieval`, over the
`descriptors` of their FaceMesh meshes), warped piecewise-affinely (`warp`) onto a target
mesh that is src's face shape carrying dst's pose and expression (`geometry`), blended, and
repaired by a small network trained on src alone (`refiner`). `model` holds it all as one
module (saved like any model), `train` trains it, merge loads it through
`merge/meshswap_predictor.py`. docs/MESHSWAP.md tells the whole story.
"""
