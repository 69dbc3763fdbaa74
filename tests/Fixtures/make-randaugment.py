#!/usr/bin/python3
# RandAugment op fixtures from Pillow (an independent implementation, the one timm's RandAugment calls): each op of
# timm's rand-m9-mstd0.5-inc1 policy applied to one 8-bit RGB picture at fixed arguments, written as raw bytes
# [h, w, 3] row-major. The calls are the ones timm's auto_augment.py makes (ImageOps, ImageEnhance, Image.point,
# Image.rotate and the affine Image.transform with resample=BICUBIC and the fill colour of the ImageNet mean).
# manifest.json lists every case: op, argument, file.
# Needs Debian's python3-pil and python3-numpy: /usr/bin/python3 make-randaugment.py
import json
import os
import numpy as np
from PIL import Image, ImageEnhance, ImageOps

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "randaugment")
os.makedirs(out, exist_ok=True)
FILL = (124, 116, 104)  # timm: round(255 * IMAGENET_DEFAULT_MEAN)


def picture(h, w):
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([110 + 90 * np.sin(0.23 * x - 0.19 * y + 1.7 * c) for c in range(3)], axis=-1)
    img += rng.normal(0, 25, img.shape)
    img[h // 4: h // 2, w // 3: 2 * w // 3] = (250, 30, 10)   # a saturated block: clipping in the cubic filter
    img = 20 + 0.8 * np.clip(img, 0, 255)                     # values in [20, 224]: autocontrast stretches each band
    img[-5:, :6] = 9                                          # dark and light corners: the histogram's ends
    img[:4, -7:] = 241
    return img.astype(np.uint8)


def affine(img, matrix):
    return img.transform(img.size, Image.AFFINE, matrix, resample=Image.BICUBIC, fillcolor=FILL)


def lut(img, table):  # timm's solarize_add goes through Image.point with a 768-entry table
    return img.point(table * 3)


def solarize_add(img, add, thresh=128):
    return lut(img, [min(255, i + add) if i < thresh else i for i in range(256)])


H, W = 37, 48
source = Image.fromarray(picture(H, W))
flat = Image.fromarray(np.full((H, W, 3), (90, 90, 200), np.uint8))   # one colour: autocontrast and equalize leave it
CASES = [("AutoContrast", 0, lambda im, a: ImageOps.autocontrast(im)),
         ("Equalize", 0, lambda im, a: ImageOps.equalize(im)),
         ("Invert", 0, lambda im, a: ImageOps.invert(im))]
CASES += [("Posterize", b, lambda im, a: ImageOps.posterize(im, a)) for b in (0, 1, 2, 4)]
CASES += [("Solarize", t, lambda im, a: ImageOps.solarize(im, a)) for t in (26, 128, 231, 256)]
CASES += [("SolarizeAdd", n, solarize_add) for n in (0, 99, 110)]
for name, enhancer in (("Color", ImageEnhance.Color), ("Contrast", ImageEnhance.Contrast),
                       ("Brightness", ImageEnhance.Brightness), ("Sharpness", ImageEnhance.Sharpness)):
    CASES += [(name, f, lambda im, a, e=enhancer: e(im).enhance(a)) for f in (0.1, 0.55, 1.0, 1.37, 1.9)]
CASES += [("Rotate", d, lambda im, a: im.rotate(a, resample=Image.BICUBIC, fillcolor=FILL)) for d in (27.3, -24.05, 30.0)]
CASES += [("ShearX", f, lambda im, a: affine(im, (1, a, 0, 0, 1, 0))) for f in (0.27, -0.3)]
CASES += [("ShearY", f, lambda im, a: affine(im, (1, 0, 0, a, 1, 0))) for f in (0.255, -0.3)]
CASES += [("TranslateXRel", p, lambda im, a: affine(im, (1, 0, a * im.size[0], 0, 1, 0))) for p in (0.405, -0.45)]
CASES += [("TranslateYRel", p, lambda im, a: affine(im, (1, 0, 0, 0, 1, a * im.size[1]))) for p in (0.39, -0.4317)]

np.asarray(source, dtype=np.uint8).tofile(os.path.join(out, "source.rgb"))
np.asarray(flat, dtype=np.uint8).tofile(os.path.join(out, "flat.rgb"))
manifest = {"height": H, "width": W, "fill": FILL, "cases": []}
for op, arg, fn in CASES:
    for image_name, image in (("source", source), ("flat", flat)):
        if image_name == "flat" and op not in ("AutoContrast", "Equalize", "Contrast", "Sharpness"):
            continue
        file = f"{op}.{arg}.{image_name}.rgb"
        np.asarray(fn(image, arg), dtype=np.uint8).tofile(os.path.join(out, file))
        manifest["cases"].append({"op": op, "arg": arg, "image": image_name, "file": file})
with open(os.path.join(out, "manifest.json"), "w") as f:
    json.dump(manifest, f, indent=1)
print(len(manifest["cases"]), "cases of", H, "x", W, "->", out)
