"""Tiny randomly initialised BERT and LLaMA checkpoints with word-level tokenizers, saved as a
user's checkpoint folder would be (safetensors + config.json + tokenizer files), for the
checkpoint, calibration and `bitlut eval` tests."""

import re
from collections import Counter

import torch

from quant.checkpoint import DEFAULT_TEXT

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def common_words(n):
    """The n most frequent lower-cased words of the shipped calibration text (ties by word)."""
    words = re.findall(r"[a-z]+", DEFAULT_TEXT.read_text(encoding="utf-8").lower())
    counts = Counter(words)
    return sorted(counts, key=lambda w: (-counts[w], w))[:n]


def save_bert(path, vocab_words=75, layers=2, hidden=32, seed=0, init=0.02):
    """A BertModel with a WordPiece tokenizer over whole words ([CLS] ... [SEP], [PAD] = 0),
    weights drawn with std `init` (BERT's 0.02 makes a tiny random block nearly the identity;
    0.2 makes every sub-layer matter). Returns the model (eval mode)."""
    from transformers import BertConfig, BertModel, BertTokenizer
    vocab = SPECIAL + common_words(vocab_words)
    BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}).save_pretrained(path)
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers,
                     num_attention_heads=2, intermediate_size=2 * hidden,
                     max_position_embeddings=128, pad_token_id=0, initializer_range=init)
    model = BertModel(cfg).eval()
    model.save_pretrained(path)
    return model


def save_llama(path, vocab_words=91, layers=2, hidden=64, seed=0, tokenizer=True, train_steps=0,
               random_norms=False):
    """A LlamaForCausalLM (GQA: 4 heads, 2 KV heads) with a word-level tokenizer
    (whitespace/punctuation pre-tokenizer), trained for `train_steps` Adam steps on the shipped
    text first (a random model predicts nearly uniformly, so its perplexity cannot get worse).
    `random_norms`: RMSNorm weights 1 + 0.1 N(0, 1) instead of their initial ones, so that each
    norm differs (for the tests that read them back). Returns the model (eval mode)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    vocab = ["[UNK]"] + common_words(vocab_words)
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=hidden, intermediate_size=160,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=256)
    model = LlamaForCausalLM(cfg)
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")
    if train_steps:
        _train(model, fast, train_steps, seed)
    if random_norms:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("norm.weight"):
                    p.add_(0.1 * torch.randn(p.shape))
    model.eval().save_pretrained(path)
    if tokenizer:
        fast.save_pretrained(path)
    return model


def _train(model, tok, steps, seed, batch=16, seqlen=64):
    ids = torch.tensor(tok(DEFAULT_TEXT.read_text(encoding="utf-8"))["input_ids"])
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        starts = torch.randint(0, ids.numel() - seqlen, (batch,), generator=g)
        x = torch.stack([ids[s:s + seqlen] for s in starts.tolist()])
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()


def tiny_block_shape():
    """A tiny GQA LLaMA block's shape (4 query heads over 2 KV heads of 32, hidden 128,
    intermediate 344), for the block tests that build their layers themselves."""
    from quant.model_shape import ModelShape
    return ModelShape(hidden=128, intermediate=344, heads=4, kv_heads=2, head_dim=32,
                      rope_theta=10000.0, norm_eps=1e-6, vocab=256, blocks=1)
