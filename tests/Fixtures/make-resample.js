// Bilinear resampling reference from TensorFlow.js: tf.image.resizeBilinear with half-pixel centres and no corner
// alignment, which is PyTorch's interpolate(bilinear, align_corners=False) without antialias (timm's npz loader).
// Reads resample/<case>.src.npy written by make-resample.py and writes resample/<case>.bilinear.npy.
// Usage (in tests/Fixtures): npm ci && node make-resample.js
const fs = require('fs');
const path = require('path');
const tf = require('@tensorflow/tfjs');

const dir = path.join(__dirname, 'resample');
const cases = { up4to6: [6, 6], up4to7x5: [7, 5], down7to3: [3, 3], down9to4x6: [4, 6] };
function readNpy(file) { // v1.0 '<f4' C-order only (what make-resample.py writes)
  const b = fs.readFileSync(file);
  const len = b.readUInt16LE(8), header = b.toString('latin1', 10, 10 + len);
  if (!header.includes("'<f4'") || header.includes('True')) throw new Error(`${file}: expected a C-order <f4 array`);
  const shape = header.match(/\(([^)]*)\)/)[1].split(',').filter(s => s.trim()).map(Number);
  const data = new Float32Array(b.buffer.slice(b.byteOffset + 10 + len, b.byteOffset + b.length));
  return { shape, data };
}
function writeNpy(file, shape, data) {
  let dict = `{'descr': '<f4', 'fortran_order': False, 'shape': (${shape.join(', ')}), }`;
  const total = Math.ceil((10 + dict.length + 1) / 64) * 64;
  dict = dict + ' '.repeat(total - 10 - dict.length - 1) + '\n';
  const pre = Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0, 0, 0]);
  pre.writeUInt16LE(dict.length, 8);
  fs.writeFileSync(file, Buffer.concat([pre, Buffer.from(dict, 'latin1'), Buffer.from(data.buffer, data.byteOffset, data.byteLength)]));
}
for (const [name, [oh, ow]] of Object.entries(cases)) {
  const src = readNpy(path.join(dir, `${name}.src.npy`));
  const out = tf.image.resizeBilinear(tf.tensor(src.data, src.shape), [oh, ow], false, true);
  writeNpy(path.join(dir, `${name}.bilinear.npy`), out.shape, out.dataSync());
  console.log(name, src.shape, '->', out.shape);
}
