// peers_ort_embed.js — ONNX Runtime's validation embeddings for `make bench-peers`.
//
// ../shared/bench/cpu/ort_run.js `validate` reports only the max error; the peers table also
// shows the min cosine, so this writes ORT's embeddings of the golden inputs for bench_peers
// `stats` to score exactly as it scores clipeval's: the same session options as ort_run.js,
// each set in one call (34 images [N,3,224,224]; 303 texts [N,77] with their attention mask).
//
// usage: node peers_ort_embed.js OUT_DIR   (writes OUT_DIR/ort_val_img.f32, ort_val_txt.f32)
// env:   ORTB as for ort_run.js ($ORTB/onnx, $ORTB/inputs, $ORTB/node/node_modules).
'use strict';
const fs = require('fs');
const path = require('path');

const ORTB = path.resolve(process.env.ORTB || 'ortb-work');
const ort = require(path.join(ORTB, 'node/node_modules/onnxruntime-node'));
const IN = path.join(ORTB, 'inputs');
const SESSION_OPTS = {
  executionProviders: ['cpu'], intraOpNumThreads: 2, interOpNumThreads: 1,
  executionMode: 'sequential', graphOptimizationLevel: 'all',
};

function readBin(name, Type) {
  const b = fs.readFileSync(path.join(IN, name));
  return new Type(b.buffer.slice(b.byteOffset, b.byteOffset + b.length));
}

function writeF32(file, data) {
  fs.writeFileSync(file, Buffer.from(data.buffer, data.byteOffset, data.byteLength));
}

(async () => {
  const out = process.argv[2];
  if (!out) { console.error('usage: node peers_ort_embed.js OUT_DIR'); process.exit(2); }
  const P = 3 * 224 * 224, L = 77;
  const pix = readBin('val_pix.f32', Float32Array);
  const ids = readBin('val_ids.i64', BigInt64Array), am = readBin('val_am.i64', BigInt64Array);
  const vis = await ort.InferenceSession.create(path.join(ORTB, 'onnx/vision.onnx'), SESSION_OPTS);
  const ri = await vis.run({ pixel_values: new ort.Tensor('float32', pix, [pix.length / P, 3, 224, 224]) });
  writeF32(path.join(out, 'ort_val_img.f32'), ri.image_embeds.data);
  const txt = await ort.InferenceSession.create(path.join(ORTB, 'onnx/text.onnx'), SESSION_OPTS);
  const rt = await txt.run({ input_ids: new ort.Tensor('int64', ids, [ids.length / L, L]),
                             attention_mask: new ort.Tensor('int64', am, [am.length / L, L]) });
  writeF32(path.join(out, 'ort_val_txt.f32'), rt.text_embeds.data);
})().catch((e) => { console.error(e); process.exit(1); });
