// Builds a tiny timm-style Swin Transformer in TensorFlow.js (CPU backend, float32) with seeded random weights and
// writes the reference fixtures that tests/Models/SwinTests.cs compares against (same files as make-vit-tiny.js):
// config.json (timm's field names), weights.safetensors (timm keys), input.npy [2, 3, 32, 32], logits.npy [2, 5],
// expected.safetensors ("targets", "loss", "grad.<key>" for every parameter).
// Three stages exercise every path: stage 0 (8×8 grid, window 4) shifts by 2 on its odd block under the −100 mask;
// stage 1 (4×4) and stage 2 (2×2) shrink the window to their grid and never shift. The math follows the Swin paper /
// timm with tfjs primitives (conv2d, slice+concat for the roll, reshape/transpose for windows and merging, gather of
// the bias table by an index built from coordinates as the original does, moments, erf, tf.grads); it shares no code
// with the engine. Usage (in tests/Fixtures): npm ci && node make-swin-tiny.js
const path = require('path');
const tf = require('@tensorflow/tfjs');
const { seed, normal, writeModelFixtures } = require('./fixture-io');

const cfg = { img_size: 32, patch_size: 4, in_chans: 3, num_classes: 5, embed_dim: 8, depths: [2, 2, 1], num_heads: [2, 2, 4], window_size: 4, mlp_ratio: 4 };
const B = 2, EPS = 1e-5;
seed(20261123);

const params = [];
function param(name, shape, mean, std) {
  const n = shape.reduce((a, b) => a * b, 1);
  params.push({ name, shape, value: tf.tensor(normal(n, mean, std), shape) });
}
const dim = s => cfg.embed_dim << s;
const resolution = s => (cfg.img_size / cfg.patch_size) >> s;
const windowOf = s => resolution(s) <= cfg.window_size ? [resolution(s), 0] : [cfg.window_size, cfg.window_size / 2];

// timm's state-dict order.
const P = cfg.patch_size;
param('patch_embed.proj.weight', [cfg.embed_dim, cfg.in_chans, P, P], 0, 0.3); param('patch_embed.proj.bias', [cfg.embed_dim], 0, 0.1);
param('patch_embed.norm.weight', [cfg.embed_dim], 1, 0.1); param('patch_embed.norm.bias', [cfg.embed_dim], 0, 0.1);
for (let s = 0; s < cfg.depths.length; s++) {
  const C = dim(s), p = `layers.${s}.`, [ws] = windowOf(s), nH = cfg.num_heads[s];
  if (s > 0) {
    param(p + 'downsample.norm.weight', [4 * dim(s - 1)], 1, 0.1); param(p + 'downsample.norm.bias', [4 * dim(s - 1)], 0, 0.1);
    param(p + 'downsample.reduction.weight', [C, 4 * dim(s - 1)], 0, 0.25);
  }
  for (let j = 0; j < cfg.depths[s]; j++) {
    const b = `${p}blocks.${j}.`;
    param(b + 'norm1.weight', [C], 1, 0.1); param(b + 'norm1.bias', [C], 0, 0.1);
    param(b + 'attn.relative_position_bias_table', [(2 * ws - 1) ** 2, nH], 0, 0.5);
    param(b + 'attn.qkv.weight', [3 * C, C], 0, 0.3); param(b + 'attn.qkv.bias', [3 * C], 0, 0.1);
    param(b + 'attn.proj.weight', [C, C], 0, 0.3); param(b + 'attn.proj.bias', [C], 0, 0.1);
    param(b + 'norm2.weight', [C], 1, 0.1); param(b + 'norm2.bias', [C], 0, 0.1);
    param(b + 'mlp.fc1.weight', [4 * C, C], 0, 0.3); param(b + 'mlp.fc1.bias', [4 * C], 0, 0.1);
    param(b + 'mlp.fc2.weight', [C, 4 * C], 0, 0.2); param(b + 'mlp.fc2.bias', [C], 0, 0.1);
  }
}
const last = dim(cfg.depths.length - 1);
param('norm.weight', [last], 1, 0.1); param('norm.bias', [last], 0, 0.1);
param('head.fc.weight', [cfg.num_classes, last], 0, 0.3); param('head.fc.bias', [cfg.num_classes], 0, 0.1);

const input = tf.tensor(normal(B * cfg.in_chans * cfg.img_size * cfg.img_size, 0, 1), [B, cfg.in_chans, cfg.img_size, cfg.img_size]);
const targets = [3, 0];

function layerNorm(x, w, b) {
  const { mean, variance } = tf.moments(x, -1, true);
  return x.sub(mean).div(variance.add(EPS).sqrt()).mul(w).add(b);
}
function linear(x, w, b) {
  const shape = x.shape;
  const y = tf.matMul(x.reshape([-1, shape[shape.length - 1]]), w, false, true);
  return (b ? y.add(b) : y).reshape([...shape.slice(0, -1), w.shape[0]]);
}
const gelu = x => x.mul(0.5).mul(tf.erf(x.div(Math.SQRT2)).add(1));
// torch.roll over axes 1 and 2 of [B,H,W,C] by `shift` (negative: towards the origin).
function roll(x, shift) {
  const H = x.shape[1], W = x.shape[2], sh = ((shift % H) + H) % H, sw = ((shift % W) + W) % W;
  if (sh) x = tf.concat([x.slice([0, H - sh, 0, 0], [-1, sh, -1, -1]), x.slice([0, 0, 0, 0], [-1, H - sh, -1, -1])], 1);
  if (sw) x = tf.concat([x.slice([0, 0, W - sw, 0], [-1, -1, sw, -1]), x.slice([0, 0, 0, 0], [-1, -1, W - sw, -1])], 2);
  return x;
}
function partition(x, ws) { // [B,H,W,C] → [B·nW, ws·ws, C]
  const [b, H, W, C] = x.shape;
  return x.reshape([b, H / ws, ws, W / ws, ws, C]).transpose([0, 1, 3, 2, 4, 5]).reshape([-1, ws * ws, C]);
}
function reverse(w, ws, b, H, W) {
  const C = w.shape[2];
  return w.reshape([b, H / ws, W / ws, ws, ws, C]).transpose([0, 1, 3, 2, 4, 5]).reshape([b, H, W, C]);
}
// The original's relative_position_index: coords [2, T], pairwise differences, shifted and flattened.
function relativeIndex(ws) {
  const T = ws * ws, index = new Int32Array(T * T);
  for (let i = 0; i < T; i++)
    for (let j = 0; j < T; j++) {
      const dh = Math.floor(i / ws) - Math.floor(j / ws) + ws - 1, dw = (i % ws) - (j % ws) + ws - 1;
      index[i * T + j] = dh * (2 * ws - 1) + dw;
    }
  return tf.tensor1d(index, 'int32');
}
// The original's attn_mask: an H×W image of region labels from the slices (0,−ws), (−ws,−shift), (−shift,end),
// partitioned like the features; pairs with different labels get −100.
function shiftMask(H, ws, shift) {
  const img = new Float32Array(H * H);
  const bounds = [[0, H - ws], [H - ws, H - shift], [H - shift, H]];
  let label = 0;
  for (const [h0, h1] of bounds)
    for (const [w0, w1] of bounds) {
      for (let y = h0; y < h1; y++) for (let x = w0; x < w1; x++) img[y * H + x] = label;
      label++;
    }
  const windows = partition(tf.tensor(img, [1, H, H, 1]), ws).reshape([-1, ws * ws]);
  const diff = windows.expandDims(1).sub(windows.expandDims(2));
  return tf.where(diff.notEqual(0), tf.fill(diff.shape, -100), tf.zerosLike(diff));
}

function forward(p) {
  const get = name => p[params.findIndex(q => q.name === name)];
  let x = tf.conv2d(input.transpose([0, 2, 3, 1]), get('patch_embed.proj.weight').transpose([2, 3, 1, 0]), P, 'valid').add(get('patch_embed.proj.bias'));
  x = layerNorm(x, get('patch_embed.norm.weight'), get('patch_embed.norm.bias'));
  for (let s = 0; s < cfg.depths.length; s++) {
    const pre = `layers.${s}.`, C = dim(s), nH = cfg.num_heads[s], hd = C / nH, [ws, shiftSize] = windowOf(s), T = ws * ws;
    if (s > 0) {
      const [b, H, W, Cp] = x.shape;
      // The original's x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2] as slices of [b, H/2, 2, W/2, 2, C].
      const grid = x.reshape([b, H / 2, 2, W / 2, 2, Cp]);
      const pick = (dy, dx) => grid.slice([0, 0, dy, 0, dx, 0], [-1, -1, 1, -1, 1, -1]).reshape([b, H / 2, W / 2, Cp]);
      x = layerNorm(tf.concat([pick(0, 0), pick(1, 0), pick(0, 1), pick(1, 1)], -1), get(pre + 'downsample.norm.weight'), get(pre + 'downsample.norm.bias'));
      x = linear(x, get(pre + 'downsample.reduction.weight'));
    }
    const [b, H, W] = x.shape, index = relativeIndex(ws);
    for (let j = 0; j < cfg.depths[s]; j++) {
      const k = `${pre}blocks.${j}.`, shift = j % 2 === 1 ? shiftSize : 0;
      let h = layerNorm(x, get(k + 'norm1.weight'), get(k + 'norm1.bias'));
      const windows = partition(roll(h, -shift), ws);
      const qkv = linear(windows, get(k + 'attn.qkv.weight'), get(k + 'attn.qkv.bias')).reshape([-1, T, 3, nH, hd]).transpose([2, 0, 3, 1, 4]);
      const [q, kk, v] = tf.unstack(qkv);
      let attn = tf.matMul(q.mul(hd ** -0.5), kk, false, true); // [B_, nH, T, T]
      const bias = tf.gather(get(k + 'attn.relative_position_bias_table'), index).reshape([T, T, nH]).transpose([2, 0, 1]);
      attn = attn.add(bias);
      if (shift > 0) {
        const mask = shiftMask(H, ws, shift), nW = mask.shape[0];
        attn = attn.reshape([-1, nW, nH, T, T]).add(mask.expandDims(1)).reshape([-1, nH, T, T]);
      }
      const o = tf.matMul(tf.softmax(attn, -1), v).transpose([0, 2, 1, 3]).reshape([-1, T, C]);
      const projected = linear(o, get(k + 'attn.proj.weight'), get(k + 'attn.proj.bias'));
      x = x.add(roll(reverse(projected, ws, b, H, W), shift));
      h = layerNorm(x, get(k + 'norm2.weight'), get(k + 'norm2.bias'));
      x = x.add(linear(gelu(linear(h, get(k + 'mlp.fc1.weight'), get(k + 'mlp.fc1.bias'))), get(k + 'mlp.fc2.weight'), get(k + 'mlp.fc2.bias')));
    }
  }
  const pooled = layerNorm(x, get('norm.weight'), get('norm.bias')).mean([1, 2]);
  return linear(pooled, get('head.fc.weight'), get('head.fc.bias'));
}
writeModelFixtures(tf, path.join(__dirname, 'swin-tiny'), cfg, params, input, targets, forward);
