// Shared by the fixture scripts: a seeded normal generator and writers for .safetensors and .npy.
const fs = require('fs');

// mulberry32 + Box-Muller: a seeded normal generator.
let state = 20261121;
function seed(s) { state = s; }
function uniform() {
  state = (state + 0x6D2B79F5) | 0;
  let t = Math.imul(state ^ (state >>> 15), 1 | state);
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
function normal(n, mean, std) {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = mean + std * Math.sqrt(-2 * Math.log(1 - uniform())) * Math.cos(2 * Math.PI * uniform());
  return a;
}

function writeSafetensors(file, tensors) { // tensors: [{ name, dtype, shape, data: TypedArray }]
  const header = {};
  let offset = 0;
  for (const t of tensors) {
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + t.data.byteLength] };
    offset += t.data.byteLength;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  fs.writeFileSync(file, Buffer.concat([len, Buffer.from(json, 'utf8'), ...tensors.map(t => Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength))]));
}
function writeNpy(file, shape, data) {
  const dims = shape.length === 1 ? `${shape[0]},` : shape.join(', ');
  let dict = `{'descr': '<f4', 'fortran_order': False, 'shape': (${dims}), }`;
  const total = Math.ceil((10 + dict.length + 1) / 64) * 64;
  dict = dict + ' '.repeat(total - 10 - dict.length - 1) + '\n';
  const pre = Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0, 0, 0]);
  pre.writeUInt16LE(dict.length, 8);
  fs.writeFileSync(file, Buffer.concat([pre, Buffer.from(dict, 'latin1'), Buffer.from(data.buffer, data.byteOffset, data.byteLength)]));
}

// Runs a model fixture: eval logits, mean cross-entropy against `targets` and its gradient for every parameter
// (tf.grads), written to `dir` as config.json, weights.safetensors, input.npy, logits.npy and expected.safetensors.
function writeModelFixtures(tf, dir, cfg, params, input, targets, forward) {
  const path = require('path');
  const B = targets.length;
  const loss = p => tf.oneHot(tf.tensor1d(targets, 'int32'), cfg.num_classes).mul(tf.logSoftmax(forward(p), -1)).sum().neg().div(B);
  const values = params.map(q => q.value);
  const logits = forward(values);
  const lossValue = loss(values);
  const grads = tf.grads((...p) => loss(p))(values);
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(cfg, null, 2) + '\n');
  writeSafetensors(path.join(dir, 'weights.safetensors'), params.map(q => ({ name: q.name, dtype: 'F32', shape: q.shape, data: q.value.dataSync() })));
  writeNpy(path.join(dir, 'input.npy'), input.shape, input.dataSync());
  writeNpy(path.join(dir, 'logits.npy'), logits.shape, logits.dataSync());
  writeSafetensors(path.join(dir, 'expected.safetensors'), [
    { name: 'targets', dtype: 'I32', shape: [B], data: Int32Array.from(targets) },
    { name: 'loss', dtype: 'F32', shape: [1], data: lossValue.dataSync() },
    ...params.map((q, i) => ({ name: 'grad.' + q.name, dtype: 'F32', shape: q.shape, data: grads[i].dataSync() })),
  ]);
  console.log(`wrote fixtures to ${dir}: loss ${lossValue.dataSync()[0].toFixed(6)}, logits[0] ${Array.from(logits.dataSync().slice(0, 5)).map(v => v.toFixed(4)).join(' ')}`);
}

module.exports = { seed, uniform, normal, writeSafetensors, writeNpy, writeModelFixtures };
