"""A stand-in for transformers' CLIPModel, for machines where transformers cannot be installed.

It has the module tree and state-dict names of transformers 4.44's eager CLIP (CLIPModel.
from_pretrained loads model.safetensors with load_state_dict(strict=True), so a misnamed module
fails loudly) and the same forward: q scaled after q_proj, causal + padding masks added before
the softmax, quick_gelu MLP, pre-LN layers, CLS pooling through post_layernorm, legacy argmax or
first-EOS text pooling. It exists to run tools/hf_trace.py end to end here:

    PYTHONPATH=tools/hf_standin python3 tools/hf_trace.py --model DIR ... --out OUT

Only the parts hf_trace.py uses are provided (no CLIPProcessor: give --pixel-values and
--input-ids). Needs torch and numpy.
"""
import json
import os
import struct
import types

import numpy as np
import torch
from torch import nn

__version__ = "stand-in (transformers 4.44 eager CLIP)"


def quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


class CLIPAttention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.num_heads, self.head_dim = heads, dim // heads
        self.scale = self.head_dim ** -0.5
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.q_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x, attention_mask=None, causal_attention_mask=None):
        b, n, d = x.shape

        def heads(t):
            return t.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)

        q = heads(self.q_proj(x) * self.scale)
        k, v = heads(self.k_proj(x)), heads(self.v_proj(x))
        w = q @ k.transpose(-1, -2)
        if causal_attention_mask is not None:
            w = w + causal_attention_mask
        if attention_mask is not None:
            w = w + attention_mask
        w = torch.softmax(w, dim=-1)
        ctx = (w @ v).transpose(1, 2).reshape(b, n, d)
        return self.out_proj(ctx), w


class CLIPMLP(nn.Module):
    def __init__(self, dim, inner):
        super().__init__()
        self.fc1 = nn.Linear(dim, inner)
        self.fc2 = nn.Linear(inner, dim)

    def forward(self, x):
        return self.fc2(quick_gelu(self.fc1(x)))


class CLIPEncoderLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.self_attn = CLIPAttention(c.hidden_size, c.num_attention_heads)
        self.layer_norm1 = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.mlp = CLIPMLP(c.hidden_size, c.intermediate_size)
        self.layer_norm2 = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, x, attention_mask, causal_mask):
        a, w = self.self_attn(self.layer_norm1(x), attention_mask, causal_mask)
        x = x + a
        return x + self.mlp(self.layer_norm2(x)), w


class CLIPEncoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.layers = nn.ModuleList(CLIPEncoderLayer(c) for _ in range(c.num_hidden_layers))

    def forward(self, x, attention_mask=None, causal_mask=None):
        states, probs = [x], []
        for layer in self.layers:
            x, w = layer(x, attention_mask, causal_mask)
            states.append(x)
            probs.append(w)
        return x, tuple(states), tuple(probs)


class CLIPVisionEmbeddings(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.class_embedding = nn.Parameter(torch.zeros(c.hidden_size))
        self.patch_embedding = nn.Conv2d(c.num_channels, c.hidden_size, c.patch_size,
                                         c.patch_size, bias=False)
        n = (c.image_size // c.patch_size) ** 2 + 1
        self.position_embedding = nn.Embedding(n, c.hidden_size)
        self.register_buffer("position_ids", torch.arange(n)[None], persistent=False)

    def forward(self, pixel_values):
        patches = self.patch_embedding(pixel_values).flatten(2).transpose(1, 2)
        cls = self.class_embedding.expand(pixel_values.shape[0], 1, -1)
        return torch.cat([cls, patches], 1) + self.position_embedding(self.position_ids)


class CLIPVisionTransformer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embeddings = CLIPVisionEmbeddings(c)
        self.pre_layrnorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.encoder = CLIPEncoder(c)
        self.post_layernorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, pixel_values, output_hidden_states=False, output_attentions=False,
                return_dict=True):
        last, states, probs = self.encoder(self.pre_layrnorm(self.embeddings(pixel_values)))
        return types.SimpleNamespace(last_hidden_state=last,
                                     pooler_output=self.post_layernorm(last[:, 0, :]),
                                     hidden_states=states, attentions=probs)


class CLIPTextEmbeddings(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.token_embedding = nn.Embedding(c.vocab_size, c.hidden_size)
        self.position_embedding = nn.Embedding(c.max_position_embeddings, c.hidden_size)

    def forward(self, input_ids):
        pos = torch.arange(input_ids.shape[1], device=input_ids.device)[None]
        return self.token_embedding(input_ids) + self.position_embedding(pos)


class CLIPTextTransformer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embeddings = CLIPTextEmbeddings(c)
        self.encoder = CLIPEncoder(c)
        self.final_layer_norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.eos_token_id = c.eos_token_id

    def forward(self, input_ids, attention_mask=None, output_hidden_states=False,
                output_attentions=False, return_dict=True):
        x = self.embeddings(input_ids)
        b, n = input_ids.shape
        lowest = torch.finfo(x.dtype).min
        causal = torch.full((n, n), lowest, dtype=x.dtype, device=x.device).triu(1)[None, None]
        pad = None
        if attention_mask is not None:
            inv = 1.0 - attention_mask[:, None, None, :].to(x.dtype)
            pad = inv.expand(b, 1, n, n).masked_fill(inv.expand(b, 1, n, n).bool(), lowest)
        last, states, probs = self.encoder(x, pad, causal)
        last = self.final_layer_norm(last)
        ids = input_ids.to(torch.int)
        at = ids.argmax(-1) if self.eos_token_id == 2 else (ids == self.eos_token_id).int().argmax(-1)
        return types.SimpleNamespace(last_hidden_state=last,
                                     pooler_output=last[torch.arange(b), at],
                                     hidden_states=states, attentions=probs)


class _Config(types.SimpleNamespace):
    def to_dict(self):
        return {k: (vars(v) if isinstance(v, types.SimpleNamespace) else v)
                for k, v in vars(self).items()}


def _load_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    out = {}
    for name, meta in json.loads(data[8:8 + n]).items():
        if name == "__metadata__":
            continue
        if meta["dtype"] != "F32":
            raise ValueError("%s: the stand-in reads F32 tensors only" % name)
        a, e = meta["data_offsets"]
        arr = np.frombuffer(data[8 + n + a:8 + n + e], dtype="<f4").reshape(meta["shape"])
        out[name] = torch.from_numpy(arr.copy())
    return out


class CLIPModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.config = cfg
        t, v = cfg.text_config, cfg.vision_config
        self.text_model = CLIPTextTransformer(t)
        self.vision_model = CLIPVisionTransformer(v)
        self.visual_projection = nn.Linear(v.hidden_size, cfg.projection_dim, bias=False)
        self.text_projection = nn.Linear(t.hidden_size, cfg.projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(2.6592))

    @classmethod
    def from_pretrained(cls, path, attn_implementation="eager"):
        with open(os.path.join(path, "config.json")) as f:
            raw = json.load(f)
        defaults = {"layer_norm_eps": 1e-5, "num_channels": 3}
        cfg = _Config(projection_dim=raw["projection_dim"],
                      text_config=types.SimpleNamespace(**{**defaults, **raw["text_config"]}),
                      vision_config=types.SimpleNamespace(**{**defaults, **raw["vision_config"]}))
        model = cls(cfg)
        model.load_state_dict(_load_safetensors(os.path.join(path, "model.safetensors")),
                              strict=True)
        return model
