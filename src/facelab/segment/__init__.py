"""Occlusion-aware face masks (issue 18): a small U-Net that maps an aligned face to its
face mask without what lies in front of it (hands, hair, glasses frames, microphones...).

`labels` (the face region from a face's own mesh), `occluders` (synthetic occluders,
registered by name), `network` (the U-Net, safetensors + JSON card), `data` (faces from the
consented footage, splits, samples, measures), `fit` (loss, steps, timed runs), `fixtures`
(the hand-labelled held-out faces: polygons in the repository, faces re-extracted from the
footage), `shipped` (which network a side uses: its own or the generic one in `weights/`),
`person` (fine-tuning on a person's polygons, masks written into faces' metadata),
`infer` (batched masks of aligned crops, smoothed over time); `tools/train_segmenter.py`
trains the generic one. A stage package: it imports faces/, faceset/ and train/warp; merge/,
train/ and the CLI use it.
"""
