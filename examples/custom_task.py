"""A task of your own through the training recipe: a tiny bigram language model.

The recipe (labelsmooth.experiment.train.train) owns the optimiser, schedule, seeds, checkpoints and
Ctrl-C; a task supplies data, model, loss and metrics. Here: predict the next character of a
repeated sentence with label-smoothed cross-entropy, checkpointed in a folder and resumed.

Run: python examples/custom_task.py [output-folder]
"""

import math
import sys
import tempfile

import torch
from torch import nn

import labelsmooth
from labelsmooth.experiment.train import TrainConfig, train

TEXT = "the quick brown fox jumps over the lazy dog. " * 40


class BigramTask:
    """Next-character prediction from the current character (vocabulary of TEXT)."""

    def __init__(self, batch_size: int = 64) -> None:
        vocab = sorted(set(TEXT))
        ids = torch.tensor([vocab.index(c) for c in TEXT])  # (L,)
        self.x, self.y, self.vocab = ids[:-1], ids[1:], len(vocab)  # (L-1,), (L-1,)
        self.batch_size = batch_size

    def num_batches(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def build_model(self) -> nn.Module:
        return nn.Embedding(self.vocab, self.vocab)  # logits of the next character

    def train_batches(self, generator, start, resume_state):
        order = torch.randperm(len(self.x), generator=generator)
        if resume_state is not None:
            generator.set_state(resume_state)
        for s in range(start * self.batch_size, len(order), self.batch_size):
            idx = order[s : s + self.batch_size]
            yield self.x[idx], self.y[idx]

    def loss(self, model, batch):
        x, y = batch
        loss = labelsmooth.cross_entropy(model(x), y, label_smoothing=0.1)  # (B, V) logits
        return loss, len(y)

    @torch.no_grad()
    def evaluate(self, model):
        nll = float(nn.functional.cross_entropy(model(self.x), self.y))
        return {"nll": nll, "perplexity": math.exp(nll)}

    def describe(self, metrics):
        return f"NLL {metrics['nll']:.3f} nats  perplexity {metrics['perplexity']:.2f}"


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp()
    config = TrainConfig(dataset="bigram-text", epochs=4, lr=0.5, num_threads=1, epochs_stop=2)
    train(config, task=BigramTask(), out_dir=out, progress=False)  # stops after 2 epochs
    config = TrainConfig(dataset="bigram-text", epochs=4, lr=0.5, num_threads=1)
    result = train(config, task=BigramTask(), out_dir=out, resume=True, progress=False)
    print(f"final perplexity {result.metrics['perplexity']:.2f} (checkpoint in {out})")
