#!/usr/bin/env python
"""Teacher-forced argmax agreement of int8 and bfloat16 with float32 on a trained model, beside `run.py`'s figure on
random weights.

No pretrained BART is reachable here, so the model is a small random BART (d = 256, 4 + 4 layers, frozen) whose
LightNER adapter is trained on real CoNLL-2003 sentences until it writes their gold outputs. Over those sentences'
gold target sequences (teacher forcing), the share of steps where int8's (`quantize="int8"`) and bfloat16's
(`dtype=torch.bfloat16`) argmax over the output index space equals float32's is reported, with float32's top-two
margin: on the training sentences the model is confident, as a trained model is on text like its training data; on
unseen test sentences it mostly guesses (it learned from a few dozen sentences).

    python benchmarks/trained_agreement.py --json      # about 3 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from run import teacher_forced_logits

from shared_assets import TOKENIZER_DIR, log, shared_dir

TRAIN_FILE = ("data", "lightner", "conll2003", "train.txt")
TEST_FILE = ("data", "lightner", "conll2003", "test.txt")
TYPES = ["LOC", "PER", "ORG", "MISC"]


def teacher_forced(model, batch):
    """Scores `[batch, steps, indices]` (float32) of every step of the batch's gold targets (`run.py`'s pass)."""
    import torch

    from lightner.modeling_lightner import shift_labels_right

    return teacher_forced_logits(torch, model, batch, shift_labels_right(batch["labels"]))


def agreement(models, batch) -> dict:
    """Per low precision, the share of gold steps where its argmax equals float32's; float32's top-two margin."""
    reference = teacher_forced(models["fp32"], batch)
    steps = batch["labels"] >= 0  # [batch, steps], real target steps
    top2 = reference.topk(2, dim=-1).values
    margins = (top2[..., 0] - top2[..., 1])[steps]
    figures = {"steps": int(steps.sum()), "fp32_top2_margin_median": float(margins.median())}
    figures["fp32_argmax_is_gold"] = float((reference.argmax(-1) == batch["labels"])[steps].float().mean())
    for name in ("int8", "bf16"):
        low = teacher_forced(models[name], batch)
        figures[f"{name}_argmax_agreement"] = float((low.argmax(-1) == reference.argmax(-1))[steps].float().mean())
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-sentences", type=int, default=48)
    parser.add_argument("--test-sentences", type=int, default=256)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    import torch
    from transformers import AutoTokenizer, BartConfig, BartModel

    from lightner.formats import read_conll
    from lightner.modeling_lightner import LightNerModel
    from lightner.tokenization_utils import collate, encode_sentences, encode_target

    shared = shared_dir(TRAIN_FILE, TEST_FILE)
    tokenizer = AutoTokenizer.from_pretrained(shared.joinpath(*TOKENIZER_DIR))
    train = [s for s in read_conll(shared.joinpath(*TRAIN_FILE)) if s.entities and len(s.words) < 30]
    train = train[: args.train_sentences]
    test = read_conll(shared.joinpath(*TEST_FILE))[: args.test_sentences]
    torch.manual_seed(0)
    shape = {"d_model": 256, "encoder_layers": 4, "decoder_layers": 4, "encoder_attention_heads": 4}
    shape |= {"decoder_attention_heads": 4, "encoder_ffn_dim": 1024, "decoder_ffn_dim": 1024}
    bart_config = BartConfig(vocab_size=len(tokenizer), dropout=0.0, attention_dropout=0.0, **shape)
    with tempfile.TemporaryDirectory() as work:
        backbone = Path(work) / "backbone"
        BartModel(bart_config).save_pretrained(backbone)
        tokenizer.save_pretrained(backbone)
        model = LightNerModel.from_backbone(backbone, TYPES, prompt_hidden_size=256, dropout=0.0)
        type_ids = {name: index for index, name in enumerate(TYPES)}

        def batch_of(sentences):
            encoded = encode_sentences(tokenizer, [s.words for s in sentences])
            targets = [encode_target(e, s.entities, type_ids) for e, s in zip(encoded, sentences)]
            return collate(encoded, tokenizer.pad_token_id, targets)

        train_batch, test_batch = batch_of(train), batch_of(test)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-3)
        model.train()
        for step in range(args.steps):
            loss = model(**train_batch).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if step % 50 == 0 or step == args.steps - 1:
                log(f"training step {step}: loss {loss.item():.4f}")
        model.save_pretrained(Path(work) / "adapter")
        models = {
            "fp32": LightNerModel.from_pretrained(Path(work) / "adapter").eval(),
            "int8": LightNerModel.from_pretrained(Path(work) / "adapter", quantize="int8").eval(),
            "bf16": LightNerModel.from_pretrained(Path(work) / "adapter", dtype=torch.bfloat16).eval(),
        }
        report = {"train": agreement(models, train_batch), "test": agreement(models, test_batch)}
    report["setting"] = {**shape, "train_sentences": len(train), "test_sentences": len(test), "steps": args.steps}
    for split in ("train", "test"):
        figures = report[split]
        log(
            f"{split}: {figures['steps']} steps, fp32 argmax is gold on {figures['fp32_argmax_is_gold']:.3f}, "
            f"margin median {figures['fp32_top2_margin_median']:.2f}; agreement int8 "
            f"{figures['int8_argmax_agreement']:.4f}, bf16 {figures['bf16_argmax_agreement']:.4f}"
        )
    if args.json:
        print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
