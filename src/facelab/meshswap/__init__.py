"""meshswap: a model family that shows src's own pixels instead of learning a face.

For each dst face: the src faces nearest in pose and expression (`retrieval`, over the
`descriptors` of their FaceMesh meshes), warped piecewise-affinely (`warp`) onto a target
mesh that is src's face shape carrying dst's pose and expression (`geometry`), and blended.
Library groundwork: not yet a family merge can load (see `merge/predictor.py`).
"""
