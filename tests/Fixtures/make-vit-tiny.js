// Builds a tiny timm-style ViT in TensorFlow.js (CPU backend, float32) with seeded random weights and writes the
// reference fixtures that tests/Models/VitFixtureTests.cs compares against:
//   config.json               the model in timm's constructor field names
//   weights.safetensors       parameters under timm state-dict keys
//   input.npy                 images [3, 3, 16, 16] (NCHW float32)
//   logits.npy                eval-mode logits [3, 5]
//   expected.safetensors      "targets" (I32 [3]), "loss" ([1], mean cross-entropy) and "grad.<key>" for every parameter
// The math is written from the paper/timm description with tfjs primitives (conv2d for the patch embedding, moments
// for LayerNorm, erf for GELU, tf.grads for the gradients); it shares no code with the engine.
// Usage (in tests/Fixtures): npm ci && node make-vit-tiny.js
const path = require('path');
const tf = require('@tensorflow/tfjs');

const cfg = { img_size: 16, patch_size: 4, in_chans: 3, num_classes: 5, embed_dim: 32, depth: 2, num_heads: 2, mlp_ratio: 4, qkv_bias: true };
const B = 3, C = cfg.embed_dim, H = C * cfg.mlp_ratio, P = cfg.patch_size, G = cfg.img_size / P, T = G * G + 1;
const NH = cfg.num_heads, HD = C / NH, EPS = 1e-6;

const { normal, writeModelFixtures } = require('./fixture-io');

// Parameters in timm's state-dict order. Scales are chosen so every path carries signal (not timm's init).
const params = [];
function param(name, shape, mean, std) {
  const n = shape.reduce((a, b) => a * b, 1);
  params.push({ name, shape, value: tf.tensor(normal(n, mean, std), shape) });
}
param('cls_token', [1, 1, C], 0, 0.5);
param('pos_embed', [1, T, C], 0, 0.5);
param('patch_embed.proj.weight', [C, cfg.in_chans, P, P], 0, 0.2);
param('patch_embed.proj.bias', [C], 0, 0.1);
for (let i = 0; i < cfg.depth; i++) {
  const b = `blocks.${i}.`;
  param(b + 'norm1.weight', [C], 1, 0.1); param(b + 'norm1.bias', [C], 0, 0.1);
  param(b + 'attn.qkv.weight', [3 * C, C], 0, 0.2); param(b + 'attn.qkv.bias', [3 * C], 0, 0.1);
  param(b + 'attn.proj.weight', [C, C], 0, 0.2); param(b + 'attn.proj.bias', [C], 0, 0.1);
  param(b + 'norm2.weight', [C], 1, 0.1); param(b + 'norm2.bias', [C], 0, 0.1);
  param(b + 'mlp.fc1.weight', [H, C], 0, 0.2); param(b + 'mlp.fc1.bias', [H], 0, 0.1);
  param(b + 'mlp.fc2.weight', [C, H], 0, 0.1); param(b + 'mlp.fc2.bias', [C], 0, 0.1);
}
param('norm.weight', [C], 1, 0.1); param('norm.bias', [C], 0, 0.1);
param('head.weight', [cfg.num_classes, C], 0, 0.3); param('head.bias', [cfg.num_classes], 0, 0.1);

const input = tf.tensor(normal(B * cfg.in_chans * cfg.img_size * cfg.img_size, 0, 1), [B, cfg.in_chans, cfg.img_size, cfg.img_size]);
const targets = [3, 0, 4];

function layerNorm(x, w, b) {
  const { mean, variance } = tf.moments(x, -1, true);
  return x.sub(mean).div(variance.add(EPS).sqrt()).mul(w).add(b);
}
function linear(x, w, b) { // x [..., K] · wᵀ + b
  const shape = x.shape;
  const y = tf.matMul(x.reshape([-1, shape[shape.length - 1]]), w, false, true).add(b);
  return y.reshape([...shape.slice(0, -1), w.shape[0]]);
}
const gelu = x => x.mul(0.5).mul(tf.erf(x.div(Math.SQRT2)).add(1));

function forward(p) {
  const get = name => p[params.findIndex(q => q.name === name)];
  // Patch embedding as a strided NHWC convolution; filter [kh, kw, cin, cout] from the timm weight [cout, cin, kh, kw].
  const nhwc = input.transpose([0, 2, 3, 1]);
  const filter = get('patch_embed.proj.weight').transpose([2, 3, 1, 0]);
  let x = tf.conv2d(nhwc, filter, P, 'valid').add(get('patch_embed.proj.bias')).reshape([B, G * G, C]);
  x = tf.concat([tf.tile(get('cls_token'), [B, 1, 1]), x], 1).add(get('pos_embed'));
  for (let i = 0; i < cfg.depth; i++) {
    const b = `blocks.${i}.`;
    const h = layerNorm(x, get(b + 'norm1.weight'), get(b + 'norm1.bias'));
    const qkv = linear(h, get(b + 'attn.qkv.weight'), get(b + 'attn.qkv.bias')).reshape([B, T, 3, NH, HD]).transpose([2, 0, 3, 1, 4]);
    const [q, k, v] = tf.unstack(qkv, 0);
    const attn = tf.softmax(tf.matMul(q.mul(1 / Math.sqrt(HD)), k, false, true), -1);
    const o = tf.matMul(attn, v).transpose([0, 2, 1, 3]).reshape([B, T, C]);
    x = x.add(linear(o, get(b + 'attn.proj.weight'), get(b + 'attn.proj.bias')));
    const h2 = layerNorm(x, get(b + 'norm2.weight'), get(b + 'norm2.bias'));
    x = x.add(linear(gelu(linear(h2, get(b + 'mlp.fc1.weight'), get(b + 'mlp.fc1.bias'))), get(b + 'mlp.fc2.weight'), get(b + 'mlp.fc2.bias')));
  }
  x = layerNorm(x, get('norm.weight'), get('norm.bias'));
  const cls = x.slice([0, 0, 0], [B, 1, C]).reshape([B, C]);
  return linear(cls, get('head.weight'), get('head.bias'));
}
writeModelFixtures(tf, path.join(__dirname, 'vit-tiny'), cfg, params, input, targets, forward);
