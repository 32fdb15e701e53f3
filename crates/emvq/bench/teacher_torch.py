"""PyTorch side of `emvq bench-teacher` (`cargo xtask bench-teacher`).

Trains the same Transformer teacher as emvq (Roy et al. 2018, arXiv
1805.11063; tensor2tensor layout): tied embeddings scaled by sqrt(d) plus
T2T sinusoidal positions, pre-norm encoder/decoder layers with fused-QKV
scaled-dot-product attention, ReLU feed-forward, label-smoothed
cross-entropy over the non-padding target positions only (packed before the
output projection, as emvq does), global grad-norm computation/clipping and
Adam with the warm-up/rsqrt learning rate. It reads the batches emvq dumped
(JSON: config and `[batch, len]` id lists), sets the same thread count, runs
`warmup` untimed steps then `steps` timed ones, and prints one JSON line:
`{"tokens_per_s": ..., "seconds": ..., "tokens": ..., "losses": [...]}`.

Usage: python3 teacher_torch.py BATCHES.json
"""

import json
import math
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn


def positions(length, channels):
    """T2T's get_timing_signal_1d: [length, channels], sines then cosines."""
    n = channels // 2
    log_inc = math.log(1.0e4) / max(n - 1, 1)
    inv = torch.exp(torch.arange(n, dtype=torch.float32) * -log_inc)
    scaled = torch.arange(length, dtype=torch.float32)[:, None] * inv[None, :]
    return torch.cat([scaled.sin(), scaled.cos()], dim=1)


class Attention(nn.Module):
    def __init__(self, d, heads, dropout):
        super().__init__()
        self.d, self.heads, self.dropout = d, heads, dropout
        self.in_proj = nn.Linear(d, 3 * d)
        self.out_proj = nn.Linear(d, d)

    def split(self, x):  # [b, t, d] -> [b, h, t, d/h]
        b, t, _ = x.shape
        return x.view(b, t, self.heads, self.d // self.heads).transpose(1, 2)

    def forward(self, x, memory=None, mask=None, causal=False):
        if memory is None:
            q, k, v = self.in_proj(x).chunk(3, dim=-1)
        else:
            w, bias = self.in_proj.weight, self.in_proj.bias
            q = F.linear(x, w[: self.d], bias[: self.d])
            k, v = F.linear(memory, w[self.d :], bias[self.d :]).chunk(2, dim=-1)
        q, k, v = self.split(q), self.split(k), self.split(v)
        p = self.dropout if self.training else 0.0
        h = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, is_causal=causal)
        b, _, t, _ = h.shape
        return self.out_proj(h.transpose(1, 2).reshape(b, t, self.d))


class FeedForward(nn.Module):
    def __init__(self, d, d_ff, dropout):
        super().__init__()
        self.linear1, self.linear2, self.dropout = nn.Linear(d, d_ff), nn.Linear(d_ff, d), dropout

    def forward(self, x):
        h = F.dropout(F.relu(self.linear1(x)), self.dropout, self.training)
        return self.linear2(h)


class EncoderLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c["d_model"]
        self.attn = Attention(d, c["heads"], c["attention_dropout"])
        self.ffn = FeedForward(d, c["d_ff"], c["relu_dropout"])
        self.norm1 = nn.LayerNorm(d, eps=c["layer_norm_eps"])
        self.norm2 = nn.LayerNorm(d, eps=c["layer_norm_eps"])
        self.p = c["dropout"]

    def forward(self, x, mask):
        x = x + F.dropout(self.attn(self.norm1(x), mask=mask), self.p, self.training)
        return x + F.dropout(self.ffn(self.norm2(x)), self.p, self.training)


class DecoderLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c["d_model"]
        self.self_attn = Attention(d, c["heads"], c["attention_dropout"])
        self.cross_attn = Attention(d, c["heads"], c["attention_dropout"])
        self.ffn = FeedForward(d, c["d_ff"], c["relu_dropout"])
        self.norms = nn.ModuleList(nn.LayerNorm(d, eps=c["layer_norm_eps"]) for _ in range(3))
        self.p = c["dropout"]

    def forward(self, y, memory, memory_mask):
        y = y + F.dropout(self.self_attn(self.norms[0](y), causal=True), self.p, self.training)
        y = y + F.dropout(
            self.cross_attn(self.norms[1](y), memory=memory, mask=memory_mask), self.p, self.training
        )
        return y + F.dropout(self.ffn(self.norms[2](y)), self.p, self.training)


class Seq2Seq(nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c["d_model"]
        self.c, self.scale = c, math.sqrt(d)
        self.embed = nn.Parameter(torch.randn(c["vocab_size"], d) / self.scale)
        self.register_buffer("pos", positions(c["max_positions"], d))
        self.encoder = nn.ModuleList(EncoderLayer(c) for _ in range(c["encoder_layers"]))
        self.decoder = nn.ModuleList(DecoderLayer(c) for _ in range(c["decoder_layers"]))
        self.enc_norm = nn.LayerNorm(d, eps=c["layer_norm_eps"])
        self.dec_norm = nn.LayerNorm(d, eps=c["layer_norm_eps"])

    def embed_tokens(self, ids):
        x = F.embedding(ids, self.embed) * self.scale + self.pos[: ids.shape[1]]
        return F.dropout(x, self.c["dropout"], self.training)

    def loss(self, src, tgt, smoothing):
        pad, bos = self.c["pad_id"], self.c["bos_id"]
        mask = (src != pad)[:, None, None, :]  # [b, 1, 1, s], True = attend
        x = self.embed_tokens(src)
        for layer in self.encoder:
            x = layer(x, mask)
        memory = self.enc_norm(x)
        tgt_in = torch.cat([torch.full_like(tgt[:, :1], bos), tgt[:, :-1]], dim=1)
        y = self.embed_tokens(tgt_in)
        for layer in self.decoder:
            y = layer(y, memory, mask)
        h = self.dec_norm(y).reshape(-1, y.shape[-1])
        keep = (tgt.reshape(-1) != pad).nonzero().squeeze(1)
        logits = F.linear(h.index_select(0, keep), self.embed)  # [n, vocab]
        target = tgt.reshape(-1).index_select(0, keep)
        return F.cross_entropy(logits, target, label_smoothing=smoothing, reduction="sum"), keep.numel()


def main():
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    c, t = spec["model"], spec["train"]
    torch.set_num_threads(spec["threads"])
    torch.manual_seed(spec["seed"])
    model = Seq2Seq(c)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(t["beta1"], t["beta2"]), eps=t["eps"])
    batches = [(torch.tensor(b["source"]), torch.tensor(b["target"])) for b in spec["batches"]]
    warmup, steps = spec["warmup"], spec["steps"]
    clip = t["clip_norm"] if t["clip_norm"] > 0 else math.inf

    def lr(step):
        w = max(t["warmup_steps"], 1)
        return t["lr_scale"] * min(1.0, step / w) * max(step, w) ** -0.5 * c["d_model"] ** -0.5

    losses, tokens, start = [], 0, None
    for i, (src, tgt) in enumerate(batches[: warmup + steps]):
        if i == warmup:
            start = time.perf_counter()
        opt.zero_grad()
        loss_sum, n = model.loss(src, tgt, t["label_smoothing"])
        (loss_sum / max(n, 1)).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        for group in opt.param_groups:
            group["lr"] = lr(i + 1)
        opt.step()
        losses.append(loss_sum.item() / max(n, 1))
        if i >= warmup:
            tokens += n
    seconds = time.perf_counter() - start
    print(json.dumps({"tokens_per_s": tokens / seconds, "seconds": seconds, "tokens": tokens, "losses": losses}))


if __name__ == "__main__":
    main()
