"""Occlusion-aware face masks (issue 18): a small U-Net that maps an aligned face to its
face mask without what lies in front of it (hands, hair, glasses frames, microphones...).

`labels` (the face region from a face's own mesh), `occluders` (synthetic occluders,
registered by name), `network` (the U-Net, safetensors + JSON card), `data` (faces from the
consented footage, splits, samples, measures), `fit` (loss, steps, timed runs);
`tools/train_segmenter.py` trains it. A stage package: it imports faces/, train/warp and
nothing above; nothing imports it yet.
"""
