"""Make docs/images/text_attribution.png: integrated gradients per token on a small BERT-like classifier.

The classifier (transformers' BertForSequenceClassification built from a config, no download) is trained here for
a few seconds on made-up reviews whose label is whether praise or blame words are in the majority, so the picture
has something to show: the praise words should push towards "positive" (red), the blame words against (blue), the
filler words stay near white. Run: .venv/bin/python docs/make_text_figures.py
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
import transformers

import deepscope as ds

HERE = Path(__file__).parent / "images"
SPECIAL = ["[PAD]", "[CLS]", "[SEP]"]
PRAISE = ["good", "great", "wonderful", "fun", "clever"]
BLAME = ["bad", "boring", "awful", "dull", "silly"]
FILLER = ["the", "movie", "was", "plot", "acting", "and", "but", "really", "quite", "a", "story", "it", "very"]
VOCABULARY = SPECIAL + PRAISE + BLAME + FILLER
ID = {word: i for i, word in enumerate(VOCABULARY)}
LENGTH = 14


def review(rng: random.Random) -> tuple[list[str], int]:
    """Filler words with 1-3 praise and blame words mixed in, never as many of one as of the other."""
    while True:
        praise, blame = rng.randint(0, 3), rng.randint(0, 3)
        if praise != blame:
            break
    words = rng.choices(PRAISE, k=praise) + rng.choices(BLAME, k=blame)
    words += rng.choices(FILLER, k=rng.randint(2, LENGTH - 2 - len(words)))
    rng.shuffle(words)
    return words, int(praise > blame)


def encode(words: list[str]) -> tuple[list[int], list[int]]:
    """[CLS] words [SEP], padded to LENGTH: ids and attention mask."""
    tokens = ["[CLS]", *words, "[SEP]"]
    ids = [ID[t] for t in tokens] + [ID["[PAD]"]] * (LENGTH - len(tokens))
    return ids, [1] * len(tokens) + [0] * (LENGTH - len(tokens))


def batch(reviews: list[tuple[list[str], int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    encoded = [encode(words) for words, _ in reviews]
    ids = torch.tensor([e[0] for e in encoded])
    mask = torch.tensor([e[1] for e in encoded])
    return ids, mask, torch.tensor([label for _, label in reviews])


def train(steps: int = 400) -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=len(VOCABULARY),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=2,
        max_position_embeddings=LENGTH,
    )
    model = transformers.BertForSequenceClassification(config)
    optimiser = torch.optim.AdamW(model.parameters(), lr=2e-3)
    rng = random.Random(0)
    model.train()
    for step in range(steps):
        ids, mask, labels = batch([review(rng) for _ in range(64)])
        loss = model(ids, attention_mask=mask, labels=labels).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % 100 == 0:
            print(f"step {step}: loss {loss.item():.3f}")
    model.eval()
    ids, mask, labels = batch([review(random.Random(1)) for _ in range(500)])
    with torch.no_grad():
        accuracy = (model(ids, attention_mask=mask).logits.argmax(1) == labels).float().mean()
    print(f"accuracy on 500 new reviews: {accuracy:.1%}")
    return model


def main() -> None:
    HERE.mkdir(parents=True, exist_ok=True)
    model = train()
    sentences = [
        "the acting was great but the plot was a bit dull",
        "a boring story and silly acting , but really fun",
        "the movie was quite clever , wonderful and good",
    ]
    words = [[w for w in s.split() if w in ID] for s in sentences]
    ids, mask, _ = batch([(w, 0) for w in words])
    # The baseline keeps [CLS] and [SEP] and pads the words (as Captum's BERT tutorial does).
    keep = (ids == ID["[CLS]"]) | (ids == ID["[SEP]"])
    baseline = torch.where(keep, ids, torch.full_like(ids, ID["[PAD]"]))
    e = ds.explain(
        model,
        ids,
        method="integrated_gradients",
        layer="bert.embeddings",
        target=1,  # "positive" for every review
        baseline=baseline,
        forward_kwargs={"attention_mask": mask},
    )
    with torch.no_grad():
        difference = model(ids, attention_mask=mask).logits[:, 1] - model(baseline, attention_mask=mask).logits[:, 1]
    print("completeness error per review:", (e.heatmap.sum(dim=1) - difference).abs().tolist())
    # One token per position, padding included: the mask keeps [PAD] out of the prediction, so it stays white.
    tokens = [[VOCABULARY[int(i)] for i in row] for row in ids]
    view = e.text(tokens)
    view.save(str(HERE / "text_attribution.png"))
    print(f"wrote {HERE / 'text_attribution.png'}")


if __name__ == "__main__":
    main()
