"""The baseline most users would try first: a token classifier (BART's encoder + a linear BIO head), fine-tuned.

Each word is labelled on its first piece with IOB2 tags over the training data's types; the words are encoded exactly
as LightNER encodes them (`tokenization_utils.encode_sentences`), so the two see the same input. Every weight trains
(AdamW, linear warm-up over a tenth of the steps then linear decay, gradient clipping at 1), and the test predictions
are scored with the same `span_f1` as LightNER's.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
from torch import nn
from transformers import AutoTokenizer, BartModel, get_linear_schedule_with_warmup

from lightner.data import spans_from_tags, tags_from_spans
from lightner.formats import load_sentences
from lightner.metrics import span_f1
from lightner.tokenization_utils import encode_sentences


class TokenClassifier(nn.Module):
    def __init__(self, backbone: str | Path, num_tags: int):
        super().__init__()
        self.encoder = BartModel.from_pretrained(backbone).get_encoder()
        self.dropout = nn.Dropout(0.1)
        self.head = nn.Linear(self.encoder.config.d_model, num_tags)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, word_starts: torch.Tensor
    ) -> torch.Tensor:
        """Tag scores `[batch, words, tags]` read at each word's first piece."""
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # [b, pieces, d]
        first_pieces = states.gather(1, word_starts.unsqueeze(-1).expand(-1, -1, states.shape[-1]))  # [b, words, d]
        return self.head(self.dropout(first_pieces))


def batch_tensors(encoded, pad_id: int) -> dict[str, torch.Tensor]:
    pieces = max(len(sentence.input_ids) for sentence in encoded)
    words = max(max(sentence.num_words, 1) for sentence in encoded)
    input_ids = torch.full((len(encoded), pieces), pad_id)
    word_starts = torch.zeros((len(encoded), words), dtype=torch.long)
    for row, sentence in enumerate(encoded):
        input_ids[row, : len(sentence.input_ids)] = torch.tensor(sentence.input_ids)
        word_starts[row, : sentence.num_words] = torch.tensor(sentence.word_starts, dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": input_ids.ne(pad_id), "word_starts": word_starts}


def train_and_score(
    backbone: str | Path,
    train_file: Path,
    test_file: Path,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
) -> dict:
    """Fine-tune on `train_file`, return `span_f1`'s precision, recall, F1 and per-type scores on `test_file`."""
    torch.manual_seed(seed)
    train, test = load_sentences(train_file), load_sentences(test_file)
    types = sorted({entity.type for sentence in train for entity in sentence.entities})
    tag_names = ["O"] + [f"{prefix}-{name}" for name in types for prefix in ("B", "I")]
    tag_ids = {name: index for index, name in enumerate(tag_names)}
    tokenizer = AutoTokenizer.from_pretrained(backbone)
    model = TokenClassifier(backbone, len(tag_names))
    encoded_train = encode_sentences(tokenizer, [sentence.words for sentence in train])
    gold_tags = [
        [tag_ids[tag] for tag in tags_from_spans([e for e in s.entities if e.type in types], len(s.words))]
        for s in train
    ]
    order = list(range(len(train)))
    steps = epochs * -(-len(order) // batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.01)
    scheduler = get_linear_schedule_with_warmup(optimizer, steps // 10, steps)
    shuffler = random.Random(seed)
    model.train()
    for _ in range(epochs):
        shuffler.shuffle(order)
        for first in range(0, len(order), batch_size):
            rows = order[first : first + batch_size]
            batch = batch_tensors([encoded_train[i] for i in rows], tokenizer.pad_token_id)
            labels = torch.full(batch["word_starts"].shape, -100)
            for row, index in enumerate(rows):
                labels[row, : len(gold_tags[index])] = torch.tensor(gold_tags[index])
            scores = model(**batch)  # [batch, words, tags]
            loss = nn.functional.cross_entropy(scores.flatten(0, 1), labels.flatten(), ignore_index=-100)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
    predictions = predict(model, tokenizer, [sentence.words for sentence in test], tag_names)
    scores = span_f1([sentence.entities for sentence in test], predictions)
    return {key: scores[key] for key in ("f1", "precision", "recall", "per_type")}


@torch.no_grad()
def predict(model: TokenClassifier, tokenizer, sentences: list[list[str]], tag_names: list[str]) -> list[list[dict]]:
    model.eval()
    predictions = []
    for first in range(0, len(sentences), 64):
        chunk = sentences[first : first + 64]
        encoded = encode_sentences(tokenizer, chunk)
        tags = model(**batch_tensors(encoded, tokenizer.pad_token_id)).argmax(-1)
        for row, words in enumerate(chunk):
            spans = spans_from_tags([tag_names[t] for t in tags[row, : len(words)].tolist()], scheme="IOB2")
            predictions.append([{"start": s.start, "end": s.end, "type": s.type} for s in spans])
    return predictions
