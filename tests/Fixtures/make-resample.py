#!/usr/bin/python3
# Resampling reference fixtures from Pillow (an independent implementation): antialiased bicubic resize of float
# ('F' mode) images, channel by channel. Writes resample/<case>.src.npy [h, w, c] and resample/<case>.bicubic.npy
# [oh, ow, c]; make-resample.js adds the bilinear (no antialias, half-pixel centres) reference from TensorFlow.js.
# Needs Debian's python3-pil and python3-numpy: /usr/bin/python3 make-resample.py
import os
import numpy as np
from PIL import Image

CASES = {"up4to6": (4, 4, 6, 6), "up4to7x5": (4, 4, 7, 5), "down7to3": (7, 7, 3, 3), "down9to4x6": (9, 9, 4, 6)}
C = 3
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "resample")
os.makedirs(out, exist_ok=True)
for name, (h, w, oh, ow) in CASES.items():
    y, x, c = np.meshgrid(np.arange(h), np.arange(w), np.arange(C), indexing="ij")
    src = (np.sin(1.3 * y + 0.7 * x + 2.1 * c) + 0.1 * c * x).astype(np.float32)
    dst = np.stack([np.asarray(Image.fromarray(src[:, :, k], mode="F").resize((ow, oh), Image.BICUBIC), dtype=np.float32)
                    for k in range(C)], axis=-1)
    np.save(os.path.join(out, f"{name}.src.npy"), src)
    np.save(os.path.join(out, f"{name}.bicubic.npy"), dst)
    print(name, src.shape, "->", dst.shape)
