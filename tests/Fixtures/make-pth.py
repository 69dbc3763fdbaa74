#!/usr/bin/python3
# PyTorch .pth fixtures written without PyTorch (not installable here): Python's own pickle module (protocol 2, as
# torch.save) with stand-in classes registered under torch's module names, so the pickle holds exactly the globals,
# REDUCE calls and persistent ids torch.save writes; then the zip layout of torch >= 1.6 (<root>/data.pkl,
# <root>/data/<key>, <root>/version), members stored uncompressed.
# Writes pth/checkpoint.pth plus pth/expected.json (every tensor's name, dtype, shape and values in row-major order),
# the malformed files the reader must refuse, and the tiny ConvNeXt and Swin fixtures under their original keys. Needs Debian's python3-numpy: /usr/bin/python3 make-pth.py
import argparse
import collections
import io
import json
import os
import pickle
import sys
import types
import zipfile
import numpy as np

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pth")
os.makedirs(out, exist_ok=True)

# Stand-ins for torch's globals, pickled by reference under torch's names.
torch = types.ModuleType("torch")
torch_utils = types.ModuleType("torch._utils")
sys.modules["torch"], sys.modules["torch._utils"] = torch, torch_utils


def _rebuild_tensor_v2(*args):
    raise RuntimeError("never called: only pickled by name")


def _rebuild_parameter(*args):
    raise RuntimeError("never called: only pickled by name")


_rebuild_tensor_v2.__module__ = _rebuild_parameter.__module__ = "torch._utils"
torch_utils._rebuild_tensor_v2, torch_utils._rebuild_parameter = _rebuild_tensor_v2, _rebuild_parameter
STORAGES = {"float32": "FloatStorage", "float16": "HalfStorage", "int64": "LongStorage", "float64": "DoubleStorage"}
for name in STORAGES.values():
    cls = type(name, (), {"__module__": "torch"})
    setattr(torch, name, cls)


class Storage:
    def __init__(self, key, array):
        self.key, self.array = key, array


class Tensor:
    """A view of a storage: offset and strides in elements, as torch's _rebuild_tensor_v2 takes them."""

    def __init__(self, storage, offset, size, stride, parameter=False):
        self.storage, self.offset, self.size, self.stride, self.parameter = storage, offset, size, stride, parameter

    def __reduce__(self):
        rebuilt = (_rebuild_tensor_v2, (self.storage, self.offset, tuple(self.size), tuple(self.stride), False, collections.OrderedDict()))
        if not self.parameter:
            return rebuilt
        return (_rebuild_parameter, (Rebuilt(rebuilt), True, collections.OrderedDict()))

    def values(self):
        flat = self.storage.array.reshape(-1)
        index = np.full(self.size, self.offset, dtype=np.int64)
        for axis, (n, s) in enumerate(zip(self.size, self.stride)):
            shape = [1] * len(self.size)
            shape[axis] = n
            index = index + (np.arange(n) * s).reshape(shape)
        return flat[index]


class Rebuilt:
    def __init__(self, reduce_value):
        self.reduce_value = reduce_value

    def __reduce__(self):
        return self.reduce_value


class Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return ("storage", getattr(torch, STORAGES[str(obj.array.dtype)]), obj.key, "cpu", obj.array.size)
        return None


def write_pth(path, obj, storages, root="archive", pickle_bytes=None, drop=()):
    buffer = io.BytesIO()
    Pickler(buffer, protocol=2).dump(obj)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        def member(name, data):  # a fixed timestamp, so the fixtures regenerate byte for byte
            z.writestr(zipfile.ZipInfo(f"{root}/{name}", date_time=(2026, 1, 1, 0, 0, 0)), data)
        member("data.pkl", pickle_bytes if pickle_bytes is not None else buffer.getvalue())
        member("byteorder", "little")
        for s in storages:
            if s.key not in drop:
                member(f"data/{s.key}", s.array.astype(s.array.dtype.newbyteorder("<")).tobytes())
        member("version", "3\n")
    return buffer.getvalue()


rng = np.random.default_rng(5)
shared = Storage("0", rng.standard_normal(40).astype(np.float32))          # two tensors share it
half = Storage("1", rng.standard_normal(6).astype(np.float16))
index = Storage("2", np.arange(9, dtype=np.int64).reshape(-1) * 7 - 20)     # an int64 buffer (relative_position_index)
double = Storage("3", rng.standard_normal(4).astype(np.float64))
state = collections.OrderedDict()
state["layers.0.blocks.0.attn.qkv.weight"] = Tensor(shared, 0, [6, 4], [4, 1], parameter=True)
state["layers.0.blocks.0.attn.qkv.bias"] = Tensor(shared, 24, [6], [1])         # offset into the same storage
state["layers.0.blocks.0.attn.proj.weight"] = Tensor(shared, 30, [2, 3], [1, 2])  # a transposed (non-contiguous) view
state["patch_embed.norm.weight"] = Tensor(half, 0, [2, 3], [3, 1])
state["layers.0.blocks.0.attn.relative_position_index"] = Tensor(index, 0, [3, 3], [3, 1])
state["head.bias"] = Tensor(double, 0, [4], [1])
state["scalar"] = Tensor(double, 3, [], [])
state._metadata = collections.OrderedDict([("", {"version": 1})])               # torch sets this; BUILD carries it
checkpoint = {"model": state, "epoch": 7, "max_accuracy": 81.5, "args": argparse.Namespace(lr=0.001, name="swin"),
              "notes": ["a", 1, (2.5, None, True)]}
storages = [shared, half, index, double]
good = write_pth(os.path.join(out, "checkpoint.pth"), checkpoint, storages)
expected = {name: {"dtype": str(t.storage.array.dtype), "shape": t.size, "values": [float(v) for v in t.values().reshape(-1)]}
            for name, t in state.items()}
with open(os.path.join(out, "expected.json"), "w") as f:
    json.dump(expected, f, indent=1)

# A bare state dict (no 'model' wrapper), under another root folder name.
write_pth(os.path.join(out, "bare.pth"), collections.OrderedDict([("w", Tensor(shared, 0, [2, 2], [2, 1]))]), [shared], root="bare")

# Malformed files.
bad = os.path.join(out, "bad")
os.makedirs(bad, exist_ok=True)


class Evil:
    """What torch.load would execute: os.system('...') on unpickling. The reader must refuse the global instead."""

    def __reduce__(self):
        return (os.system, ("echo this must never run",))


write_pth(os.path.join(bad, "unknown-global.pth"), {"model": collections.OrderedDict([("w", Evil())])}, [])
write_pth(os.path.join(bad, "missing-storage.pth"), checkpoint, storages, drop=("2",))
write_pth(os.path.join(bad, "truncated-pickle.pth"), None, storages, pickle_bytes=good[: len(good) // 2])
write_pth(os.path.join(bad, "bad-opcode.pth"), None, storages, pickle_bytes=good[:2] + b"\xff" + good[3:])
out_of_range = collections.OrderedDict([("w", Tensor(shared, 38, [2, 2], [2, 1]))])              # runs past the storage
write_pth(os.path.join(bad, "out-of-range.pth"), out_of_range, [shared])
with open(os.path.join(out, "checkpoint.pth"), "rb") as f:
    whole = f.read()
with open(os.path.join(bad, "truncated-zip.pth"), "wb") as f:
    f.write(whole[: len(whole) - 200])
with open(os.path.join(bad, "legacy.pth"), "wb") as f:
    f.write(bytes.fromhex("80 02 8a 0a 6c fc 9c 46 f9 20 6a a8 50 19 2e"))            # the pre-1.6 magic number pickle
print("wrote", sorted(os.listdir(out)), sorted(os.listdir(bad)))

# The tiny ConvNeXt fixture's weights under the original repository's keys (facebookresearch/ConvNeXt), as its
# checkpoints hold them: {'model': state_dict, 'epoch': ...}. The engine must load it into identical logits.
def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    body = raw[8 + n:]
    return {k: np.frombuffer(body[v["data_offsets"][0]:v["data_offsets"][1]], dtype=np.float32).reshape(v["shape"])
            for k, v in header.items() if k != "__metadata__"}


def original_key(timm):
    p = timm.split(".")
    if p[0] == "stem":
        return ".".join(["downsample_layers", "0"] + p[1:])
    if p[0] == "stages" and p[2] == "downsample":
        return ".".join(["downsample_layers", p[1]] + p[3:])
    if p[0] == "stages" and p[2] == "blocks":
        rest = ".".join(p[4:]).replace("conv_dw.", "dwconv.").replace("mlp.fc1.", "pwconv1.").replace("mlp.fc2.", "pwconv2.")
        return f"stages.{p[1]}.{p[3]}.{rest}"
    if p[:2] == ["head", "norm"]:
        return ".".join(["norm"] + p[2:])
    if p[:2] == ["head", "fc"]:
        return ".".join(["head"] + p[2:])
    return timm


def write_original(fixture, file, rename, extras=lambda name: []):
    """Writes a fixture's weights under original keys (rename), each followed by the buffers extras(name) lists."""
    weights = read_safetensors(os.path.join(os.path.dirname(out), fixture, "weights.safetensors"))
    storages, state = [], collections.OrderedDict()

    def put(key, value):
        storage = Storage(str(len(storages)), np.ascontiguousarray(value).reshape(-1))
        storages.append(storage)
        state[key] = Tensor(storage, 0, list(value.shape), [int(s // value.itemsize) for s in np.ascontiguousarray(value).strides])

    for name, value in weights.items():
        put(rename(name), value)
        for key, buffer in extras(name):
            put(key, buffer)
    write_pth(os.path.join(out, file), {"model": state, "epoch": 299}, storages)
    print("wrote", file, "with", len(state), "tensors")


write_original("convnext-tiny", "convnext-original.pth", original_key)


# The tiny Swin fixture under the original repository's keys (microsoft/Swin-Transformer): patch merging at the end
# of the previous stage, head without .fc, and the buffers relative_position_index (int64) and attn_mask (float) that
# the engine must skip and recompute.
def swin_original_key(timm):
    p = timm.split(".")
    if p[0] == "layers" and p[2] == "downsample":
        return ".".join(["layers", str(int(p[1]) - 1)] + p[2:])
    if p[:2] == ["head", "fc"]:
        return ".".join(["head"] + p[2:])
    return timm


def swin_buffers(name):
    p = name.split(".")
    if not name.endswith("attn.relative_position_bias_table"):
        return []
    cfg = json.load(open(os.path.join(os.path.dirname(out), "swin-tiny", "config.json")))
    stage, block = int(p[1]), int(p[3])
    grid = cfg["img_size"] // cfg["patch_size"] >> stage
    ws = min(grid, cfg["window_size"])
    ys, xs = np.divmod(np.arange(ws * ws), ws)
    index = ((ys[:, None] - ys[None, :] + ws - 1) * (2 * ws - 1) + xs[:, None] - xs[None, :] + ws - 1).astype(np.int64)
    prefix = ".".join(p[:4])
    buffers = [(prefix + ".attn.relative_position_index", index)]
    if block % 2 == 1 and grid > ws:
        buffers.append((prefix + ".attn_mask", np.full(((grid // ws) ** 2, ws * ws, ws * ws), -100.0, dtype=np.float32)))
    return buffers


write_original("swin-tiny", "swin-original.pth", swin_original_key, swin_buffers)
