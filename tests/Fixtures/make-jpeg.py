#!/usr/bin/python3
# JPEG decoding and 8-bit resize fixtures from Pillow (an independent implementation, the one the VTAB reference
# loaders use): small JPEG files, Pillow's decoded RGB pixels (Image.open(f).convert("RGB")), and Pillow's bicubic
# resize of those pixels. Raw bytes, [h, w, 3] row-major; manifest.json gives every size.
# Needs Debian's python3-pil and python3-numpy: /usr/bin/python3 make-jpeg.py
import json
import os
import numpy as np
from PIL import Image

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "jpeg")
os.makedirs(out, exist_ok=True)


def picture(h, w, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([128 + 100 * np.sin(0.31 * x + 0.17 * y + 1.1 * c) for c in range(3)], axis=-1)
    img += rng.normal(0, 18, img.shape)      # texture, so every DCT coefficient matters
    img[h // 3: h // 2, w // 4: w // 2] = (250, 20, 40)   # a sharp-edged block (ringing, clipping in the resize)
    return np.clip(img, 0, 255).astype(np.uint8)


# name: (height, width, mode, subsampling, quality, resize targets as (h, w))
CASES = {
    "rgb420": (30, 41, "RGB", 2, 75, [(16, 16), (224, 224), (30, 20)]),
    "rgb444": (23, 37, "RGB", 0, 90, [(16, 16), (50, 37)]),
    "rgb422": (17, 19, "RGB", 1, 60, [(96, 64)]),
    "gray": (26, 33, "L", 0, 80, [(16, 16), (40, 40)]),
}
manifest = {}
for name, (h, w, mode, subsampling, quality, sizes) in CASES.items():
    img = Image.fromarray(picture(h, w, len(manifest)))
    if mode == "L":
        img = img.convert("L")
    path = os.path.join(out, f"{name}.jpg")
    img.save(path, quality=quality, subsampling=subsampling)
    decoded = Image.open(path).convert("RGB")
    np.asarray(decoded, dtype=np.uint8).tofile(os.path.join(out, f"{name}.rgb"))
    entry = {"height": h, "width": w, "resized": []}
    for oh, ow in sizes:
        resized = decoded.resize((ow, oh), Image.BICUBIC)
        np.asarray(resized, dtype=np.uint8).tofile(os.path.join(out, f"{name}.{oh}x{ow}.rgb"))
        entry["resized"].append([oh, ow])
    manifest[name] = entry
    print(name, (h, w), mode, "->", sizes)
with open(os.path.join(out, "manifest.json"), "w") as f:
    json.dump(manifest, f, indent=1)
