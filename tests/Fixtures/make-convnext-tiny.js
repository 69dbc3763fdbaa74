// Builds a tiny timm-style ConvNeXt in TensorFlow.js (CPU backend, float32) with seeded random weights and writes the
// reference fixtures that tests/Models/ConvNeXtFixtureTests.cs compares against (same files as make-vit-tiny.js):
// config.json (timm's field names), weights.safetensors (timm keys), input.npy [3, 3, 16, 16], logits.npy [3, 5],
// expected.safetensors ("targets", "loss", "grad.<key>" for every parameter).
// The math follows the ConvNeXt paper / timm with tfjs primitives (conv2d for the stem and downsampling, depthwiseConv2d
// for the 7×7 convolutions, moments for LayerNorm, erf for GELU, tf.grads); it shares no code with the engine.
// Usage (in tests/Fixtures): npm ci && node make-convnext-tiny.js
const path = require('path');
const tf = require('@tensorflow/tfjs');
const { seed, normal, writeModelFixtures } = require('./fixture-io');

const cfg = { img_size: 16, in_chans: 3, num_classes: 5, depths: [1, 2], dims: [8, 16], kernel_size: 7, mlp_ratio: 4 };
const B = 3, K = cfg.kernel_size, EPS = 1e-6;
seed(20261122);

const params = [];
function param(name, shape, mean, std) {
  const n = shape.reduce((a, b) => a * b, 1);
  params.push({ name, shape, value: tf.tensor(normal(n, mean, std), shape) });
}
// timm's state-dict order: a module's own parameters (gamma) before its children's.
const [C0, C1] = cfg.dims;
param('stem.0.weight', [C0, cfg.in_chans, 4, 4], 0, 0.3); param('stem.0.bias', [C0], 0, 0.1);
param('stem.1.weight', [C0], 1, 0.1); param('stem.1.bias', [C0], 0, 0.1);
for (let s = 0; s < cfg.dims.length; s++) {
  const C = cfg.dims[s], p = `stages.${s}.`;
  if (s > 0) {
    param(p + 'downsample.0.weight', [cfg.dims[s - 1]], 1, 0.1); param(p + 'downsample.0.bias', [cfg.dims[s - 1]], 0, 0.1);
    param(p + 'downsample.1.weight', [C, cfg.dims[s - 1], 2, 2], 0, 0.3); param(p + 'downsample.1.bias', [C], 0, 0.1);
  }
  for (let j = 0; j < cfg.depths[s]; j++) {
    const b = `${p}blocks.${j}.`;
    param(b + 'gamma', [C], 0.5, 0.2); // trained-looking layer scale (not timm's 1e-6 init) so every block carries signal
    param(b + 'conv_dw.weight', [C, 1, K, K], 0, 0.15); param(b + 'conv_dw.bias', [C], 0, 0.1);
    param(b + 'norm.weight', [C], 1, 0.1); param(b + 'norm.bias', [C], 0, 0.1);
    param(b + 'mlp.fc1.weight', [4 * C, C], 0, 0.3); param(b + 'mlp.fc1.bias', [4 * C], 0, 0.1);
    param(b + 'mlp.fc2.weight', [C, 4 * C], 0, 0.2); param(b + 'mlp.fc2.bias', [C], 0, 0.1);
  }
}
param('head.norm.weight', [C1], 1, 0.1); param('head.norm.bias', [C1], 0, 0.1);
param('head.fc.weight', [cfg.num_classes, C1], 0, 0.3); param('head.fc.bias', [cfg.num_classes], 0, 0.1);

const input = tf.tensor(normal(B * cfg.in_chans * cfg.img_size * cfg.img_size, 0, 1), [B, cfg.in_chans, cfg.img_size, cfg.img_size]);
const targets = [1, 4, 0];

function layerNorm(x, w, b) {
  const { mean, variance } = tf.moments(x, -1, true);
  return x.sub(mean).div(variance.add(EPS).sqrt()).mul(w).add(b);
}
function linear(x, w, b) {
  const shape = x.shape;
  return tf.matMul(x.reshape([-1, shape[shape.length - 1]]), w, false, true).add(b).reshape([...shape.slice(0, -1), w.shape[0]]);
}
const gelu = x => x.mul(0.5).mul(tf.erf(x.div(Math.SQRT2)).add(1));
const convFilter = w => w.transpose([2, 3, 1, 0]);                                   // [O,I,kh,kw] → [kh,kw,I,O]
const depthwiseFilter = w => w.reshape([w.shape[0], K, K]).transpose([1, 2, 0]).expandDims(3); // [C,1,k,k] → [k,k,C,1]

function forward(p) {
  const get = name => p[params.findIndex(q => q.name === name)];
  let x = tf.conv2d(input.transpose([0, 2, 3, 1]), convFilter(get('stem.0.weight')), 4, 'valid').add(get('stem.0.bias'));
  x = layerNorm(x, get('stem.1.weight'), get('stem.1.bias'));
  for (let s = 0; s < cfg.dims.length; s++) {
    const pre = `stages.${s}.`;
    if (s > 0) {
      x = layerNorm(x, get(pre + 'downsample.0.weight'), get(pre + 'downsample.0.bias'));
      x = tf.conv2d(x, convFilter(get(pre + 'downsample.1.weight')), 2, 'valid').add(get(pre + 'downsample.1.bias'));
    }
    for (let j = 0; j < cfg.depths[s]; j++) {
      const b = `${pre}blocks.${j}.`;
      let h = tf.depthwiseConv2d(x, depthwiseFilter(get(b + 'conv_dw.weight')), 1, 'same').add(get(b + 'conv_dw.bias'));
      h = layerNorm(h, get(b + 'norm.weight'), get(b + 'norm.bias'));
      h = linear(gelu(linear(h, get(b + 'mlp.fc1.weight'), get(b + 'mlp.fc1.bias'))), get(b + 'mlp.fc2.weight'), get(b + 'mlp.fc2.bias'));
      x = x.add(h.mul(get(b + 'gamma')));
    }
  }
  const pooled = layerNorm(x.mean([1, 2]), get('head.norm.weight'), get('head.norm.bias'));
  return linear(pooled, get('head.fc.weight'), get('head.fc.bias'));
}
writeModelFixtures(tf, path.join(__dirname, 'convnext-tiny'), cfg, params, input, targets, forward);
