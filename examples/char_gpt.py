"""A small character-level GPT on the Python standard library's source.

Token and position embeddings, pre-norm blocks of causal self-attention and a GELU MLP,
a final layer norm and a head tied to the token embedding; AdamW with warm-up and cosine
decay, gradient clipping. Prints a sample every few hundred steps.

    python examples/char_gpt.py --steps 600
"""

import argparse
import math

import fluxion as torch
import fluxion.nn as nn
import fluxion.nn.functional as F
from fluxion.datasets import CharCorpus


class Block(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(approximate="tanh"),
                                 nn.Linear(4 * width, width))

    def attention(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))

    def forward(self, x):
        x = x + self.attention(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, vocab, context, layers=4, heads=4, width=128):
        super().__init__()
        self.tok = nn.Embedding(vocab, width)
        self.pos = nn.Embedding(context, width)
        self.blocks = nn.Sequential(*[Block(width, heads) for _ in range(layers)])
        self.ln = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)
        self.head.weight = self.tok.weight  # weight tying
        for p in self.parameters():  # GPT-2's small initialisation keeps the first logits tame
            if p.ndim == 2:
                nn.init.normal_(p, 0.0, 0.02)

    def forward(self, idx):
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1]))
        return self.head(self.ln(self.blocks(x)))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--context", type=int, default=64)
    args = parser.parse_args()

    torch.manual_seed(0)
    corpus = CharCorpus(block_size=args.context, split="train", max_chars=1_000_000)
    data = corpus.data
    model = GPT(corpus.vocab_size, args.context)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95),
                                  weight_decay=0.1)
    warmup = 100
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(
        (s + 1) / warmup, 0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, s / args.steps)))))

    for step in range(args.steps):
        starts = torch.randint(0, len(data) - args.context - 1, (32,))
        x = torch.stack([data[s:s + args.context] for s in starts.tolist()])
        y = torch.stack([data[s + 1:s + args.context + 1] for s in starts.tolist()])
        logits = model(x)
        loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), y.view(-1))
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step:4d}  loss {loss.item():.3f}")

    model.eval()
    idx = torch.tensor([corpus.encode("def ")])
    with torch.no_grad():
        for _ in range(200):
            probs = F.softmax(model(idx[:, -args.context:])[:, -1] / 0.8, dim=-1)
            idx = torch.cat([idx, torch.multinomial(probs, 1)], dim=1)
    print(corpus.decode(idx[0].tolist()))


if __name__ == "__main__":
    main()
