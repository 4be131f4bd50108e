#!/usr/bin/env python3
"""hf_trace.py - a trace folder from Hugging Face transformers' CLIPModel.

Runs one image and/or one text through CLIPModel with forward hooks and writes every
intermediate tensor as OUT/<name>.npy plus OUT/manifest.json, in the layout of
golden/debug/README.md (the layout `clipeval trace` writes), so that

    clipeval compare OUT_OF_CLIPEVAL OUT_OF_THIS_SCRIPT

tells where two backends part. Needs torch, transformers, numpy (and Pillow for --image);
it imports nothing from clipeval. Standalone: run it wherever those are installed.

    python3 tools/hf_trace.py --model openai/clip-vit-base-patch32 \
        --image cat.png --text "a photo of a cat" --out hf_trace/

Conventions (golden/debug/README.md): float32, batch dimension dropped, eager attention.
  vision.pixel_values [3,S,S]      the processor's output (the input)
  vision.patch_conv [D,g,g]        patch_embedding Conv2d output
  vision.embeddings [N,D]          [class; patches] + position embeddings (input of pre_layrnorm)
  vision.pre_layrnorm [N,D]
  vision.hidden_states [L+1,N,D]   output_hidden_states: [0] encoder input, [i] output of layer i-1
  vision.layerK.layer_norm1 / q_proj (BEFORE the head_dim**-0.5 scaling) / k_proj / v_proj /
      attn_probs [heads,N,N] / attn_context (input of out_proj) / out_proj / layer_norm2 /
      fc1 (before the activation) / fc2                          for every layer K
  vision.pooled_cls_pre_ln [D], vision.pooled [D], image_features [E], image_embeds [E]
  text.input_ids [L] int64, text.attention_mask [L] int64, text.hidden_states [L+1,77,D],
  text.layerK.*, text.final_layer_norm [77,D], text.pool_index [1] int64, text.pooled [D],
  text_features [E], text_embeds [E]
"""
import argparse
import json
import os
import sys

import numpy as np

LAYER_PARTS = ["layer_norm1", "q_proj", "k_proj", "v_proj", "attn_probs", "attn_context",
               "out_proj", "layer_norm2", "fc1", "fc2"]
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    p.add_argument("--model", required=True, help="HF model id or local folder")
    img = p.add_mutually_exclusive_group()
    img.add_argument("--image", help="an image file: Image.open(f).convert('RGB') + CLIPProcessor")
    img.add_argument("--pixel-values", help="float32 [3,S,S], [1,3,S,S] or [N,3,S,S] .npy")
    txt = p.add_mutually_exclusive_group()
    txt.add_argument("--text", help="tokenized like CLIPProcessor(padding='max_length', "
                                    "truncation=True, max_length=77)")
    txt.add_argument("--input-ids", help="int64/int32 [L], [1,L] or [N,L] .npy")
    p.add_argument("--image-index", type=int, help="row of a [N,3,S,S] --pixel-values file")
    p.add_argument("--text-index", type=int, help="row of a [N,L] --input-ids file")
    p.add_argument("--out", required=True, help="the trace folder (created; must be empty)")
    p.add_argument("--precision", choices=sorted(DTYPES), default="fp32",
                   help="model dtype; arrays are always written as float32")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1, ...)")
    p.add_argument("--threads", type=int, help="torch.set_num_threads")
    a = p.parse_args(argv)
    if not (a.image or a.pixel_values or a.text or a.input_ids):
        p.error("give an input: --image, --pixel-values, --text and/or --input-ids")
    if a.image_index is not None and not a.pixel_values:
        p.error("--image-index needs --pixel-values")
    if a.text_index is not None and not a.input_ids:
        p.error("--text-index needs --input-ids")
    return a


def pick_row(arr, index, rank, what, flag):
    """One item of a batch: arr is [..item dims] or [N, ..item dims]."""
    if arr.ndim == rank:
        if index not in (None, 0):
            sys.exit("%s holds 1 item: %s %d is out of range" % (what, flag, index))
        return arr
    if arr.ndim != rank + 1:
        sys.exit("%s: %d dimensions, expected %d or %d" % (what, arr.ndim, rank, rank + 1))
    if index is None:
        if arr.shape[0] != 1:
            sys.exit("%s holds %d items: choose one with %s K" % (what, arr.shape[0], flag))
        index = 0
    if not 0 <= index < arr.shape[0]:
        sys.exit("%s: %s %d is out of range (%d items)" % (what, flag, index, arr.shape[0]))
    return arr[index]


def pool_index(ids, eos_token_id):
    """The position CLIPTextTransformer pools (transformers 4.x)."""
    if eos_token_id == 2:  # legacy configs: argmax of the ids (the EOT token has the largest id)
        return int(np.argmax(ids))
    hits = np.nonzero(ids == eos_token_id)[0]
    return int(hits[0]) if len(hits) else 0


class Recorder:
    """Forward hooks that keep the first batch item of each module's output (or input)."""

    def __init__(self):
        self.arrays = {}
        self.handles = []

    @staticmethod
    def _np(t):
        return t.detach().float().cpu().numpy()[0]

    def output(self, module, name):
        def hook(_m, _inp, out):
            self.arrays[name] = self._np(out[0] if isinstance(out, tuple) else out)
        self.handles.append(module.register_forward_hook(hook))

    def input(self, module, name):
        def hook(_m, inp):
            self.arrays[name] = self._np(inp[0])
        self.handles.append(module.register_forward_pre_hook(hook))

    def layers(self, encoder, prefix):
        for k, layer in enumerate(encoder.layers):
            p = "%s.layer%d." % (prefix, k)
            self.output(layer.layer_norm1, p + "layer_norm1")
            self.output(layer.self_attn.q_proj, p + "q_proj")  # HF scales q after q_proj
            self.output(layer.self_attn.k_proj, p + "k_proj")
            self.output(layer.self_attn.v_proj, p + "v_proj")
            self.input(layer.self_attn.out_proj, p + "attn_context")
            self.output(layer.self_attn.out_proj, p + "out_proj")
            self.output(layer.layer_norm2, p + "layer_norm2")
            self.output(layer.mlp.fc1, p + "fc1")
            self.output(layer.mlp.fc2, p + "fc2")

    def remove(self):
        for h in self.handles:
            h.remove()


def load_model(name, dtype, device):
    import torch
    from transformers import CLIPModel
    try:  # attention probabilities need the eager implementation
        model = CLIPModel.from_pretrained(name, attn_implementation="eager")
    except TypeError:  # transformers < 4.36 has only eager attention
        model = CLIPModel.from_pretrained(name)
    return model.to(device=device, dtype=getattr(torch, dtype)).eval()


def main(argv):
    a = parse_args(argv)
    import torch
    import transformers
    if a.threads:
        torch.set_num_threads(a.threads)
    if os.path.isdir(a.out) and os.listdir(a.out):
        sys.exit("--out %s is not empty" % a.out)
    dtype = DTYPES[a.precision]
    model = load_model(a.model, dtype, a.device)
    cfg = model.config
    rec = Recorder()
    arrays = rec.arrays
    manifest = {
        "generator": "tools/hf_trace.py",
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "conventions": "golden/debug/README.md",
        "model": a.model,
        "device": a.device,
        "precision": a.precision,
        "dtype": "float32",
        "batch": 1,
        "attn_implementation": "eager",
        "torch_threads": torch.get_num_threads(),
    }

    processor = None
    if a.image or a.text:
        from transformers import CLIPProcessor
        processor = CLIPProcessor.from_pretrained(a.model)

    with torch.no_grad():
        if a.image or a.pixel_values:
            vm = model.vision_model
            if a.image:
                from PIL import Image
                image = Image.open(a.image).convert("RGB")  # as DataFlow's ImageCLIPEvaluator
                px = processor(images=[image], return_tensors="np")["pixel_values"][0]
                manifest["image"] = a.image
            else:
                raw = np.load(a.pixel_values)
                px = pick_row(raw, a.image_index, 3, a.pixel_values, "--image-index")
                manifest["image"] = a.pixel_values + (
                    "[%d]" % a.image_index if a.image_index is not None else "")
            px = np.ascontiguousarray(px, dtype=np.float32)
            arrays["vision.pixel_values"] = px
            rec.output(vm.embeddings.patch_embedding, "vision.patch_conv")
            rec.output(vm.embeddings, "vision.embeddings")
            rec.output(vm.pre_layrnorm, "vision.pre_layrnorm")
            rec.input(vm.post_layernorm, "vision.pooled_cls_pre_ln")
            rec.output(vm.post_layernorm, "vision.pooled")
            rec.output(model.visual_projection, "image_features")
            rec.layers(vm.encoder, "vision")
            pixel_values = torch.from_numpy(px)[None].to(device=a.device,
                                                          dtype=getattr(torch, dtype))
            out = vm(pixel_values=pixel_values, output_hidden_states=True,
                     output_attentions=True, return_dict=True)
            feats = model.visual_projection(out.pooler_output)
            embeds = feats / feats.norm(p=2, dim=-1, keepdim=True)
            arrays["vision.hidden_states"] = np.stack([rec._np(h) for h in out.hidden_states])
            for k, att in enumerate(out.attentions):
                arrays["vision.layer%d.attn_probs" % k] = rec._np(att)
            arrays["image_embeds"] = rec._np(embeds)

        if a.text or a.input_ids:
            tm = model.text_model
            ctx = cfg.text_config.max_position_embeddings
            if a.text:
                enc = processor(text=[a.text], padding="max_length", truncation=True,
                                max_length=min(77, ctx), return_tensors="np")
                ids = enc["input_ids"][0].astype(np.int64)
                mask = enc["attention_mask"][0].astype(np.int64)
                manifest["text"] = a.text
                manifest["attention_mask"] = "from the processor"
            else:
                raw = np.load(a.input_ids)
                ids = pick_row(raw, a.text_index, 1, a.input_ids, "--text-index").astype(np.int64)
                if len(ids) > ctx:
                    sys.exit("%s: %d positions, the model has %d" % (a.input_ids, len(ids), ctx))
                pool = pool_index(ids, cfg.text_config.eos_token_id)
                mask = (np.arange(len(ids)) <= pool).astype(np.int64)  # as `clipeval trace`
                manifest["input_ids"] = a.input_ids + (
                    "[%d]" % a.text_index if a.text_index is not None else "")
                manifest["attention_mask"] = "derived from the ids: 1 for positions 0..pool_index"
            pool = pool_index(ids, cfg.text_config.eos_token_id)
            arrays["text.input_ids"] = ids
            arrays["text.attention_mask"] = mask
            arrays["text.pool_index"] = np.array([pool], dtype=np.int64)  # torch's argmax: [1]
            rec.output(tm.final_layer_norm, "text.final_layer_norm")
            rec.output(model.text_projection, "text_features")
            rec.layers(tm.encoder, "text")
            out = tm(input_ids=torch.from_numpy(ids)[None].to(a.device),
                     attention_mask=torch.from_numpy(mask)[None].to(a.device),
                     output_hidden_states=True, output_attentions=True, return_dict=True)
            feats = model.text_projection(out.pooler_output)
            embeds = feats / feats.norm(p=2, dim=-1, keepdim=True)
            arrays["text.hidden_states"] = np.stack([rec._np(h) for h in out.hidden_states])
            for k, att in enumerate(out.attentions):
                arrays["text.layer%d.attn_probs" % k] = rec._np(att)
            arrays["text.pooled"] = rec._np(out.pooler_output)
            arrays["text_embeds"] = rec._np(embeds)
            manifest["text_len"] = int(mask.sum())
            manifest["pool_index"] = pool
    rec.remove()

    missing = [n for n in ("vision.patch_conv", "vision.pooled", "text.final_layer_norm")
               if (n.startswith("vision") and "vision.pixel_values" in arrays
                   or n.startswith("text") and "text.input_ids" in arrays) and n not in arrays]
    if missing:
        sys.exit("hooks did not fire for %s: this transformers version names CLIP's modules "
                 "differently" % ", ".join(missing))
    os.makedirs(a.out, exist_ok=True)
    files = {}
    for name in sorted(arrays):
        arr = arrays[name]
        if arr.dtype.kind == "f":
            arr = arr.astype(np.float32)
        np.save(os.path.join(a.out, name + ".npy"), np.ascontiguousarray(arr))
        files[name + ".npy"] = {"shape": list(arr.shape), "dtype": str(arr.dtype)}
    manifest["config"] = cfg.to_dict() if hasattr(cfg, "to_dict") else {}
    manifest["files"] = files
    with open(os.path.join(a.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, default=str)
    print("hf_trace: %d tensors in %s" % (len(files), a.out), file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
