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


def save_bert(path, vocab_words=75, layers=2, hidden=32, seed=0):
    """A BertModel with a WordPiece tokenizer over whole words ([CLS] ... [SEP], [PAD] = 0).
    Returns the model (eval mode)."""
    from transformers import BertConfig, BertModel, BertTokenizer
    vocab = SPECIAL + common_words(vocab_words)
    BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}).save_pretrained(path)
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers,
                     num_attention_heads=2, intermediate_size=2 * hidden,
                     max_position_embeddings=128, pad_token_id=0)
    model = BertModel(cfg).eval()
    model.save_pretrained(path)
    return model


def save_llama(path, vocab_words=91, layers=2, hidden=64, seed=0, tokenizer=True):
    """A LlamaForCausalLM with a word-level tokenizer (whitespace/punctuation pre-tokenizer).
    Returns the model (eval mode)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    vocab = ["[UNK]"] + common_words(vocab_words)
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=hidden, intermediate_size=160,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=256)
    model = LlamaForCausalLM(cfg).eval()
    model.save_pretrained(path)
    if tokenizer:
        tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
        tok.normalizer = normalizers.Lowercase()
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(path)
    return model
