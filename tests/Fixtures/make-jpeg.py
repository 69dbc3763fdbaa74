#!/usr/bin/python3
# JPEG decoding and 8-bit resize fixtures from Pillow (an independent implementation, the one the VTAB reference
# loaders use): small JPEG files, Pillow's decoded RGB pixels (Image.open(f).convert("RGB")), and Pillow's bicubic
# resize of those pixels. Raw bytes, [h, w, 3] row-major; manifest.json gives every size.
# The decoder variants Pillow does not write (progressive, restart intervals, 4:4:0, 4:1:1, mixed sampling, RGB
# components, narrow chroma) come from libjpeg-turbo's cjpeg and are decoded by Pillow the same way.
# Encoder fixtures: TurboJPEG's tjCompress2 (4:2:0, default flags: what the synthetic tasks were written with) called
# through ctypes on generated pictures, encoded/<w>x<h>q<quality>.rgb and .jpg.
# Needs Debian's python3-pil, python3-numpy, libjpeg-turbo-progs and libturbojpeg0: /usr/bin/python3 make-jpeg.py
import json
import ctypes
import os
import subprocess
import tempfile
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
# name: (height, width, cjpeg options)
CJPEG = {
    "progressive420": (29, 37, ["-progressive", "-quality", "80"]),
    "progressive444opt": (21, 30, ["-progressive", "-optimize", "-sample", "1x1", "-quality", "92"]),
    "progressivegray": (25, 19, ["-progressive", "-grayscale"]),
    "restart420": (40, 50, ["-restart", "2B", "-quality", "85"]),
    "restartprogressive": (33, 35, ["-restart", "1", "-progressive"]),
    "s440": (26, 23, ["-sample", "1x2", "-quality", "88"]),
    "s411": (18, 45, ["-sample", "4x1"]),
    "mixed": (27, 31, ["-sample", "2x1,1x2,1x1"]),
    "narrow420": (30, 3, ["-quality", "90"]),
    "rgbcomponents": (17, 22, ["-rgb", "-quality", "90"]),
}
with tempfile.TemporaryDirectory() as tmp:
    for name, (h, w, options) in CJPEG.items():
        ppm = os.path.join(tmp, "in.ppm")
        Image.fromarray(picture(h, w, len(manifest))).save(ppm)
        path = os.path.join(out, f"{name}.jpg")
        subprocess.run(["cjpeg", *options, "-outfile", path, ppm], check=True)
        decoded = Image.open(path).convert("RGB")
        np.asarray(decoded, dtype=np.uint8).tofile(os.path.join(out, f"{name}.rgb"))
        manifest[name] = {"height": h, "width": w, "resized": []}
        print(name, (h, w), " ".join(options))
turbo = ctypes.CDLL("libturbojpeg.so.0")
turbo.tjInitCompress.restype = ctypes.c_void_p
encoded = os.path.join(out, "encoded")
os.makedirs(encoded, exist_ok=True)
manifest["encoded"] = []
for w, h, q in [(16, 16, 90), (41, 30, 90), (33, 17, 75), (1, 1, 90), (100, 77, 50), (9, 40, 10), (224, 224, 90), (70, 65, 95), (31, 96, 1)]:
    rgb = np.ascontiguousarray(picture(h, w, w * 1000 + h))
    handle = ctypes.c_void_p(turbo.tjInitCompress())
    buf, size = ctypes.POINTER(ctypes.c_ubyte)(), ctypes.c_ulong(0)
    if turbo.tjCompress2(handle, rgb.ctypes.data_as(ctypes.c_void_p), w, w * 3, h, 0, ctypes.byref(buf), ctypes.byref(size), 2, q, 0) != 0:
        raise RuntimeError("tjCompress2 failed")
    name = f"{w}x{h}q{q}"
    rgb.tofile(os.path.join(encoded, name + ".rgb"))
    with open(os.path.join(encoded, name + ".jpg"), "wb") as f:
        f.write(ctypes.string_at(buf, size.value))
    turbo.tjFree(buf)
    turbo.tjDestroy(handle)
    manifest["encoded"].append({"name": name, "width": w, "height": h, "quality": q})
    print("encoded", name, size.value, "bytes")
with open(os.path.join(out, "manifest.json"), "w") as f:
    json.dump(manifest, f, indent=1)
