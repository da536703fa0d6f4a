"""A model of your own, for `model.kind: python` (see experiments/python-model.yaml).

noisecli calls `residual_mlp(**model.args, n_inputs=..., n_outputs=...)`: it passes whichever
of n_inputs, n_outputs, task, vocab_size and block_size the signature names. The module's
forward(x) returns (batch, n_outputs) logits, like the built-in models, and every noise kind
works on it: `weight` and `anticorrelated` by parameter-name globs, `activation` by
module-name globs (default: every nonlinearity, here the two GELUs).
"""

from torch import nn


class ResidualMLP(nn.Module):
    def __init__(self, n_inputs: int, n_outputs: int, width: int, blocks: int):
        super().__init__()
        self.stem = nn.Linear(n_inputs, width)
        self.blocks = nn.ModuleList(nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.GELU())
                                    for _ in range(blocks))
        self.head = nn.Linear(width, n_outputs)

    def forward(self, x):  # (B, n_inputs) -> (B, n_outputs)
        h = self.stem(x)
        for block in self.blocks:
            h = h + block(h)
        return self.head(h)


def residual_mlp(n_inputs: int, n_outputs: int, width: int = 128, blocks: int = 2) -> nn.Module:
    return ResidualMLP(n_inputs, n_outputs, width, blocks)
