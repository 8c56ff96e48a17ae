"""Label smoothing in a Lightning module: labelsmooth's ``LabelSmoothingCrossEntropy`` as the
criterion (an ``nn.Module``: it moves with the model and its options are hyperparameters).

A small MLP learns ten Gaussian blobs on CPU for a few epochs; the training loss is the
smoothed one, and the validation step logs the unsmoothed NLL and the accuracy.

Run: python examples/lightning_module.py [OUTPUT_DIR]   (needs lightning; no checkpoints or
logs are written, OUTPUT_DIR is a temporary folder by default)
"""

import sys
import tempfile

import torch
import torch.nn.functional as F
from torch import nn

try:
    import lightning.pytorch as pl
except ImportError:  # the older package name
    import pytorch_lightning as pl

import labelsmooth

CLASSES, FEATURES = 10, 16


def blobs(n: int, seed: int) -> torch.utils.data.TensorDataset:
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(CLASSES, FEATURES, generator=torch.Generator().manual_seed(0)) * 2
    y = torch.randint(0, CLASSES, (n,), generator=g)
    x = centers[y] + torch.randn(n, FEATURES, generator=g)
    return torch.utils.data.TensorDataset(x, y)


class Classifier(pl.LightningModule):
    def __init__(self, label_smoothing: float = 0.1, convention: str = "uniform") -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(FEATURES, 64), nn.ReLU(), nn.Linear(64, CLASSES))
        self.criterion = labelsmooth.LabelSmoothingCrossEntropy(
            label_smoothing, convention=convention
        )

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = self.criterion(self.net(x), y)  # (B, C) logits, (B,) class indices
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        self.log("val_nll", F.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


if __name__ == "__main__":
    pl.seed_everything(0, verbose=False)
    loader = torch.utils.data.DataLoader(blobs(512, 1), batch_size=64, shuffle=True)
    val = torch.utils.data.DataLoader(blobs(256, 2), batch_size=256)
    trainer = pl.Trainer(
        max_epochs=3, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(),
    )  # fmt: skip
    model = Classifier(0.1, convention="uniform")
    trainer.fit(model, loader, val)
    metrics = trainer.callback_metrics
    print(f"train loss {float(metrics['train_loss']):.3f} (smoothed)")
    print(f"val nll {float(metrics['val_nll']):.3f}  val accuracy {float(metrics['val_acc']):.3f}")
