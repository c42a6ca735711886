// Reference outputs of HSE faceres (global_pooling/Mean) with TensorFlow.js, pure-JS CPU backend.
// usage: NODE_PATH=<folder>/node_modules node tfjs_reference.js MODEL_DIR IN.f32 N OUT.f32
// IN: N x 224 x 224 x 3 float32 little-endian, already preprocessed (BGR minus the ImageNet means).
const tf = require('@tensorflow/tfjs');
const fs = require('fs');
const path = require('path');
async function main() {
  const [dir, inFile, n, outFile] = process.argv.slice(2);
  await tf.setBackend('cpu');
  const meta = JSON.parse(fs.readFileSync(path.join(dir, 'faceres.json')));
  const specs = [].concat(...meta.weightsManifest.map((g) => g.weights));
  const bufs = [].concat(...meta.weightsManifest.map((g) => g.paths.map((p) => fs.readFileSync(path.join(dir, p)))));
  const all = Buffer.concat(bufs);
  const handler = { load: async () => ({ modelTopology: meta.modelTopology, weightSpecs: specs,
    weightData: all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength), format: meta.format,
    generatedBy: meta.generatedBy, convertedBy: meta.convertedBy, signature: meta.signature }) };
  const model = await tf.loadGraphModel(handler);
  const raw = fs.readFileSync(inFile);
  const x = tf.tensor4d(new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4), [Number(n), 224, 224, 3]);
  const out = model.execute(x, 'global_pooling/Mean');
  const data = await out.data();
  fs.writeFileSync(outFile, Buffer.from(data.buffer));
  console.log('tfjs', tf.version.tfjs, 'backend', tf.getBackend(), 'out', out.shape);
}
main();
