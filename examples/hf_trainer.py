"""Label smoothing in a Hugging Face Trainer: labelsmooth's loss as ``compute_loss_func``.

A tiny GPT-2 (randomly initialized, built in code: nothing is downloaded) learns to count
modulo 50 on CPU. The loss is labelsmooth's uniform smoothing (what
``TrainingArguments(label_smoothing_factor=0.1)`` computes) with the padding token kept out of
the smoothing support, and the true NLL is logged beside the smoothed loss for perplexity.

Run: python examples/hf_trainer.py [OUTPUT_DIR]   (needs transformers and accelerate;
nothing is written to OUTPUT_DIR, a temporary folder by default, since saving is off)
"""

import sys
import tempfile

import torch
import transformers

from labelsmooth.integrations.transformers import (
    LabelSmoothingLoss,
    class_mask_from_ids,
    nll_logging_callback,
)

VOCAB, PAD, SEQ = 64, 0, 16
transformers.set_seed(0)

# data: sequences "s, s+1, s+2, ..." (mod 50, shifted past PAD) of varying length, right-padded
g = torch.Generator().manual_seed(0)
train = []
for _ in range(128):
    length = int(torch.randint(6, SEQ + 1, (), generator=g))
    start = int(torch.randint(0, 50, (), generator=g))
    ids = torch.full((SEQ,), PAD)
    ids[:length] = (start + torch.arange(length)) % 50 + 1
    labels = torch.where(torch.arange(SEQ) < length, ids, -100)  # no loss on the padding
    train.append({"input_ids": ids, "attention_mask": (labels != -100).long(), "labels": labels})

config = transformers.GPT2Config(
    vocab_size=VOCAB, n_positions=SEQ, n_embd=32, n_layer=1, n_head=2,
    bos_token_id=VOCAB - 1, eos_token_id=VOCAB - 1,
)  # fmt: skip
model = transformers.GPT2LMHeadModel(config)

# the loss: ε = 0.1, uniform over every token but PAD; the NLL is tracked for perplexity
loss_func = LabelSmoothingLoss(
    0.1, task="causal_lm", class_mask=class_mask_from_ids(VOCAB, [PAD]), track_nll=True
)

out = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp()
args = transformers.TrainingArguments(
    output_dir=out, per_device_train_batch_size=8, gradient_accumulation_steps=2,
    max_steps=20, learning_rate=2e-2, logging_steps=5, save_strategy="no", report_to="none",
    use_cpu=True, seed=0, disable_tqdm=True,
)  # fmt: skip
trainer = transformers.Trainer(
    model=model,
    args=args,
    train_dataset=train,
    compute_loss_func=loss_func,
    callbacks=[nll_logging_callback(loss_func)],
)
trainer.train()

for entry in trainer.state.log_history:
    if "loss" in entry:
        print(
            f"step {entry['step']:3d}  smoothed loss {entry['loss']:.3f}  "
            f"nll {entry['nll']:.3f}  perplexity {entry['perplexity']:.2f}"
        )
last = [e for e in trainer.state.log_history if "perplexity" in e][-1]
print(f"final perplexity {last['perplexity']:.2f}")
