#!/usr/bin/env python3
"""Tiny random-initialised text encoders and their golden outputs, for tandem-text's parity tests.

Writes one Hugging Face / sentence-transformers model directory per architecture into
crates/text/tests/fixtures/ (each a few hundred KB):

    bert/          BertModel, WordPiece ([CLS] … [SEP]), Transformer → Pooling(mean) → Dense(32→16, tanh)
                   → Normalize, prompts {"query": "query: ", "document": "passage: "}, max_seq_length 24;
                   its golden also holds every Pooling mode (embedding_cls/max/mean/…/lasttoken)
    roberta/       RobertaModel, byte-level BPE (<s> … </s>), Pooling(cls), no Normalize, max_seq_length 24
    xlm-roberta/   XLMRobertaModel, Unigram + Metaspace (<s> … </s>), Pooling(mean) → Normalize, 24
    mpnet/         MPNetModel, WordPiece with <s> … </s> (MPNetTokenizer), Pooling(mean) → Normalize, 24
    t5/            T5EncoderModel (feed_forward_proj "relu"), Unigram + Metaspace, "… </s>",
                   Pooling(mean) → Dense(32→16, no bias, Identity) → Normalize (sentence-t5 layout), 24
    t5-gated/      as t5 with feed_forward_proj "gated-gelu" (T5 v1.1 / GTR), Pooling(mean) → Normalize, 24
    modernbert/    ModernBertModel (layers: global, local, global; local_attention 8), byte-level BPE with
                   [CLS] … [SEP] and the specials as added tokens after the BPE vocabulary, Pooling(mean), 48
    refused/       directories the Rust loader must refuse (see refused/expected.json):
                   pytorch-bin-only/ (weights only in pytorch_model.bin), unsupported/ (GPT2Model),
                   vocab-mismatch/ (a BERT whose config vocab_size is below the tokenizer's largest id)

Every model directory is what `save_pretrained` writes (config.json + float32 model.safetensors,
tokenizer.json + tokenizer_config.json), plus the sentence-transformers files (modules.json,
sentence_bert_config.json with max_seq_length, config_sentence_transformers.json, 1_Pooling/…).
bert, t5, t5-gated and modernbert keep the layout sentence-transformers 6.2 saves (module types
"sentence_transformers.base.modules.…", Pooling keys "embedding_dimension"/"pooling_mode");
roberta, xlm-roberta and mpnet are rewritten to the layout of models on the Hub saved by older
sentence-transformers (types "sentence_transformers.models.…", sentence_bert_config.json holding only
max_seq_length/do_lower_case, Pooling keys "word_embedding_dimension"/"pooling_mode_*_tokens", no
Normalize folder), which sentence-transformers 6.2 still loads. No README.md model card is written.
Tokenizers are trained with the `tokenizers` library on the first 3000 sentences of
../shared/data/scifact-abstracts/sentences.jsonl (WordPiece ids renumbered in a fixed order and
Unigram pieces rescored from corpus counts, since the trainers' outputs vary from run to run there),
then rebuilt through the transformers tokenizer class of the architecture, so that tokenizer.json is
exactly the pipeline AutoTokenizer runs (the script checks that
`tokenizers.Tokenizer.from_file("tokenizer.json")` gives the same ids for every text).

Weights: `torch.manual_seed(0)` before building each model from its config; the matrices keep the
model's own initialisation (with the initializer_range / initializer_factor of the config shown),
then every 1-D parameter (LayerNorm/RMSNorm weights, biases) gets N(0, 0.1²) noise added, so that a
dropped bias or norm weight changes the outputs.

Golden outputs, in each model directory:

    golden.json          texts, max_seq_length, the padded batch the HF tokenizer gives for them the
                         way sentence-transformers calls it (`tokenizer(texts, padding=True,
                         truncation="longest_first", max_length=max_seq_length)`): input_ids,
                         attention_mask (and token_type_ids where the tokenizer returns them), lengths,
                         token strings; the same for the prompted texts where the model has prompts;
                         the names and shapes of the tensors below.
    golden.safetensors   float32 tensors:
        hidden.{i}       [len_i, H] last_hidden_state of text i alone (no padding), AutoModel
                         (T5EncoderModel for T5) loaded with attn_implementation="eager", eval mode
        hidden_batch     [n, Lmax, H] last_hidden_state of the padded batch (rows past len_i are the
                         model's outputs at padding positions: compare only where attention_mask is 1)
        pooled           [n, H] output of the model's Pooling module (before Dense/Normalize)
        dense            [n, 16] output of the Dense module (bert, t5 only)
        embedding        [n, D] SentenceTransformer(dir, device="cpu").encode(texts,
                         batch_size=len(texts), convert_to_numpy=True)
        embedding_query  [n, D] the same with prompt_name="query" (bert only)
        embedding_{mode} [n, H] (bert only) for mode in cls, max, mean, mean_sqrt_len_tokens,
                         weightedmean, lasttoken: `Pooling(32, pooling_mode=mode)` of
                         sentence_transformers applied directly to the token_embeddings the loaded
                         SentenceTransformer's Transformer module gives for the batch (no Dense, no
                         Normalize)

Checks made while writing (the script stops on failure): tokenizer.json through the bare `tokenizers`
library gives the golden ids; SentenceTransformer.preprocess gives the golden batch; the long texts are
truncated to max_seq_length; hidden_batch[i, :len_i] equals hidden.{i} (2e-5); `pooled` and every
embedding_{mode} equal a NumPy pooling of hidden_batch (2e-5; ST runs its own attention
implementation, sdpa for most); the module-by-module run equals encode(); the .bin of
refused/pytorch-bin-only loads back into transformers.

Run (CPU only, ~25 s on 2 cores, no network; deterministic, byte for byte, and idempotent: it deletes
and rewrites only the fixture directories listed above, and refused/expected.json):

    bench/.venv/bin/python bench/make_text_fixtures.py
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
# Single-threaded trainers (their outputs still follow Rust HashMap order: see train_wordpiece and
# train_unigram for how the script makes them deterministic).
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import safetensors.torch
import sentence_transformers
import tokenizers
import torch
import transformers
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    AutoModel,
    AutoTokenizer,
    BertConfig,
    BertModel,
    BertTokenizer,
    GPT2Config,
    GPT2Model,
    GPT2Tokenizer,
    ModernBertConfig,
    ModernBertModel,
    MPNetConfig,
    MPNetModel,
    MPNetTokenizer,
    PreTrainedTokenizerFast,
    RobertaConfig,
    RobertaModel,
    RobertaTokenizer,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
    XLMRobertaConfig,
    XLMRobertaModel,
    XLMRobertaTokenizer,
)

transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "crates" / "text" / "tests" / "fixtures"
CORPUS = REPO.parent / "shared" / "data" / "scifact-abstracts" / "sentences.jsonl"
CORPUS_LINES = 3000

# The same texts for every fixture: empty, one word, a plain sentence, accents / CJK, numbers and
# punctuation, a medium sentence (~20-30 tokens: longer than ModernBERT's local window), and two texts
# longer than every max_seq_length (so truncation happens), the last one full of repeated
# whitespace, tabs and newlines.
TEXTS = [
    "",
    "retrieval",
    "Protein folding is determined by the amino acid sequence.",
    "Café Müller naïve — 東京",
    "In 2019, 42.5% of 1,000 patients (n=425) improved; p<0.001!",
    "Mean pooling averages the token vectors of a sentence and ignores the padding positions entirely.",
    "Randomised controlled trials remain the gold standard for evaluating clinical interventions, yet many "
    "observational studies of vitamin D supplementation, statin therapy and physical activity report "
    "associations that later trials fail to reproduce, which suggests that confounding, reverse causation "
    "and selective reporting are common sources of bias in the biomedical literature.",
    "  Whitespace   handling matters:\n\n\tthe encoder sees   tokens, not characters.\nRepeated    spaces, "
    "tabs\t\tand blank\n\n\nlines collapse for WordPiece and SentencePiece,   while byte-level BPE keeps "
    "them as separate tokens of their own.   The   end,   after   many   more   words   than   fit.  \n",
]
LONG_TEXTS = (6, 7)  # indices that must be truncated to max_seq_length

PROMPTS = {"query": "query: ", "document": "passage: "}
POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
HIDDEN = 32


# --------------------------------------------------------------------------------------------------
# Tokenizer training (the `tokenizers` library), shared by the fixtures
# --------------------------------------------------------------------------------------------------


def corpus() -> list[str]:
    with open(CORPUS, encoding="utf-8") as f:
        return [json.loads(line)["text"] for _, line in zip(range(CORPUS_LINES), f)]


def train_wordpiece(special: list[str], unk: str, vocab_size: int) -> dict[str, int]:
    """WordPiece vocabulary (BERT's pipeline: BertNormalizer lowercase, BertPreTokenizer); the
    special tokens get ids 0, 1, … in the order given."""
    tok = Tokenizer(models.WordPiece(unk_token=unk))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(
        corpus(), trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=special, show_progress=False)
    )
    # The trainer's set of tokens is stable, but the ids it hands out follow a Rust HashMap's order,
    # which changes from run to run: number them in a fixed order instead (WordPiece's greedy
    # longest-match does not depend on ids). Specials first, then by length, word-initial first.
    learned = sorted(
        (t for t in tok.get_vocab() if t not in special),
        key=lambda t: (len(t.removeprefix("##")), t.startswith("##"), t),
    )
    return {t: i for i, t in enumerate([*special, *learned])}


def train_bytelevel_bpe(special: list[str], vocab_size: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Byte-level BPE (GPT-2 / RoBERTa pre-tokenizer, add_prefix_space=False): vocab and merges."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(
        corpus(),
        trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=special,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return model["vocab"], merges


def train_unigram(special: list[str], unk: str, vocab_size: int) -> list[tuple[str, float]]:
    """SentencePiece-like Unigram vocabulary [(piece, log-prob)] over WhitespaceSplit + Metaspace("▁",
    prepend always), the pre-tokenization XLMRobertaTokenizer and T5Tokenizer use."""
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")]
    )
    tok.train_from_iterator(
        corpus(),
        trainers.UnigramTrainer(
            vocab_size=vocab_size, special_tokens=special, unk_token=unk, max_piece_length=12, show_progress=False
        ),
    )
    # The set of pieces is stable, but the trainer's scores vary in the third decimal from run to run
    # (Rust HashMap order in its EM sums): score each piece instead by log(count / total) of its
    # occurrences in the pre-tokenized corpus, and order pieces by score like SentencePiece does.
    learned = [piece for piece, _ in json.loads(tok.to_str())["model"]["vocab"] if piece not in special]
    words = [w for line in corpus() for w, _ in tok.pre_tokenizer.pre_tokenize_str(line)]
    blob = "\n".join(words)  # no piece holds a newline (WhitespaceSplit)
    counts = {piece: max(blob.count(piece), 1) for piece in learned}
    total = sum(counts.values())
    scored = sorted(((p, round(math.log(c / total), 4)) for p, c in counts.items()), key=lambda x: (-x[1], x[0]))
    return [(s, 0.0) for s in special] + scored


# --------------------------------------------------------------------------------------------------
# Writing model directories
# --------------------------------------------------------------------------------------------------


def fresh_dir(rel: str) -> Path:
    """Deletes and recreates one fixture directory (only ever under FIXTURES)."""
    path = (FIXTURES / rel).resolve()
    assert FIXTURES.resolve() in path.parents, path
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def perturb_vectors_(model: torch.nn.Module, scale: float = 0.1) -> torch.nn.Module:
    """Adds N(0, scale²) to every 1-D parameter (norm weights start at 1, biases at 0)."""
    with torch.no_grad():
        for _, p in model.named_parameters():
            if p.ndim == 1:
                p.add_(torch.randn_like(p) * scale)
    return model.eval()


def save_model_dir(path: Path, model, tokenizer, st_modules: list, *, max_seq_length: int, prompts=None,
                   legacy_st_layout: bool = False) -> None:
    """save_pretrained of the model and tokenizer, then the sentence-transformers files around them."""
    tokenizer.save_pretrained(path)
    model.save_pretrained(path)
    st = SentenceTransformer(
        modules=[Transformer(str(path), max_seq_length=max_seq_length), *st_modules], prompts=prompts, device="cpu"
    )
    st.save(str(path), create_model_card=False)
    # ST re-saves model and tokenizer (with model_max_length = max_seq_length): restore what
    # save_pretrained wrote, so that tokenizer_config.json keeps the model's own limit as on the Hub
    # and the Rust side has to read max_seq_length from sentence_bert_config.json.
    tokenizer.save_pretrained(path)
    model.save_pretrained(path)
    sbert = json.loads((path / "sentence_bert_config.json").read_text())
    sbert.update(max_seq_length=max_seq_length, do_lower_case=False)
    write_json(path / "sentence_bert_config.json", sbert)
    if legacy_st_layout:
        rewrite_legacy_st_layout(path, max_seq_length)


def rewrite_legacy_st_layout(path: Path, max_seq_length: int) -> None:
    """The files as sentence-transformers 2.x wrote them (most models on the Hub)."""
    legacy_types = {
        "Transformer": "sentence_transformers.models.Transformer",
        "Pooling": "sentence_transformers.models.Pooling",
        "Dense": "sentence_transformers.models.Dense",
        "Normalize": "sentence_transformers.models.Normalize",
    }
    modules = json.loads((path / "modules.json").read_text())
    for m in modules:
        m["type"] = legacy_types[m["type"].rsplit(".", 1)[1]]
        if m["type"].endswith("Normalize"):
            shutil.rmtree(path / m["path"])  # git keeps no empty folder: Hub repos have none
    write_json(path / "modules.json", modules, indent=2)
    write_json(path / "sentence_bert_config.json", {"max_seq_length": max_seq_length, "do_lower_case": False})
    pooling = json.loads((path / "1_Pooling" / "config.json").read_text())
    modes = (pooling["pooling_mode"],) if isinstance(pooling["pooling_mode"], str) else pooling["pooling_mode"]
    legacy = {"word_embedding_dimension": pooling["embedding_dimension"]}
    for key, mode in (
        ("pooling_mode_cls_token", "cls"),
        ("pooling_mode_mean_tokens", "mean"),
        ("pooling_mode_max_tokens", "max"),
        ("pooling_mode_mean_sqrt_len_tokens", "mean_sqrt_len_tokens"),
        ("pooling_mode_weightedmean_tokens", "weightedmean"),
        ("pooling_mode_lasttoken", "lasttoken"),
    ):
        legacy[key] = mode in modes
    legacy["include_prompt"] = pooling["include_prompt"]
    write_json(path / "1_Pooling" / "config.json", legacy)


def write_json(path: Path, obj, indent: int = 4) -> None:
    path.write_text(json.dumps(obj, indent=indent, ensure_ascii=False) + "\n", encoding="utf-8")


def compact_json(obj, level: int = 0) -> str:
    """JSON with one line per list of numbers / short strings (token ids, masks, tokens)."""
    pad, inner = " " * level, " " * (level + 1)
    if isinstance(obj, dict):
        items = [f"{inner}{json.dumps(k, ensure_ascii=False)}: {compact_json(v, level + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}" if items else "{}"
    if isinstance(obj, list):
        flat = json.dumps(obj, ensure_ascii=False)
        if all(not isinstance(v, (dict, list)) for v in obj) and len(flat) <= 600:
            return flat
        return "[\n" + ",\n".join(inner + compact_json(v, level + 1) for v in obj) + "\n" + pad + "]"
    return json.dumps(obj, ensure_ascii=False)


# --------------------------------------------------------------------------------------------------
# Golden outputs
# --------------------------------------------------------------------------------------------------


def numpy_pool(hidden: np.ndarray, mask: np.ndarray, mode: str) -> np.ndarray:
    """Reference pooling over a padded batch (what the Rust side is expected to do)."""
    m = mask[:, :, None].astype(np.float64)
    h = hidden.astype(np.float64)
    lengths = mask.sum(1)
    if mode == "mean":
        return (h * m).sum(1) / np.maximum(m.sum(1), 1e-9)
    if mode == "cls":
        return h[:, 0]
    if mode == "max":
        return np.where(m > 0, h, -np.inf).max(1)
    if mode == "mean_sqrt_len_tokens":
        return (h * m).sum(1) / np.sqrt(np.maximum(m.sum(1), 1e-9))
    if mode == "weightedmean":
        w = m * np.arange(1, h.shape[1] + 1)[None, :, None]
        return (h * w).sum(1) / np.maximum(w.sum(1), 1e-9)
    if mode == "lasttoken":
        return h[np.arange(len(h)), lengths - 1]
    raise ValueError(mode)


def encode_batch(tokenizer, texts: list[str], max_seq_length: int) -> dict:
    """The padded batch, as sentence-transformers asks the tokenizer for it."""
    return tokenizer(texts, padding=True, truncation="longest_first", max_length=max_seq_length, return_tensors="pt")


def batch_json(tokenizer, batch) -> dict:
    out = {key: batch[key].tolist() for key in batch}
    lengths = batch["attention_mask"].sum(1).tolist()
    out["lengths"] = lengths
    out["tokens"] = [tokenizer.convert_ids_to_tokens(ids[:n]) for ids, n in zip(out["input_ids"], lengths)]
    return out


def check_raw_tokenizer(path: Path, texts: list[str], batch, max_seq_length: int) -> None:
    """tokenizer.json alone (the `tokenizers` library, as a Rust loader would use it) gives the ids."""
    raw = Tokenizer.from_file(str(path / "tokenizer.json"))
    raw.enable_truncation(max_length=max_seq_length)
    lengths = batch["attention_mask"].sum(1).tolist()
    for text, enc, ids, n in zip(texts, raw.encode_batch(texts), batch["input_ids"].tolist(), lengths):
        assert enc.ids == ids[:n], (path.name, text, enc.ids, ids[:n])


def write_goldens(path: Path, *, encoder_cls, max_seq_length: int, extra: dict | None = None,
                  all_pooling_modes: bool = False) -> dict:
    name = str(path.relative_to(FIXTURES))
    tokenizer = AutoTokenizer.from_pretrained(path)
    batch = encode_batch(tokenizer, TEXTS, max_seq_length)
    check_raw_tokenizer(path, TEXTS, batch, max_seq_length)
    lengths = batch["attention_mask"].sum(1)
    for i in LONG_TEXTS:
        assert lengths[i] == max_seq_length, (name, i, int(lengths[i]))

    tensors: dict[str, torch.Tensor] = {}
    model = encoder_cls.from_pretrained(path, attn_implementation="eager").eval()
    with torch.no_grad():
        for i, n in enumerate(lengths.tolist()):
            alone = {key: value[i : i + 1, :n] for key, value in batch.items()}
            tensors[f"hidden.{i}"] = model(**alone).last_hidden_state[0]
        tensors["hidden_batch"] = model(**batch).last_hidden_state
    for i, n in enumerate(lengths.tolist()):
        np.testing.assert_allclose(tensors["hidden_batch"][i, :n], tensors[f"hidden.{i}"], atol=2e-5, err_msg=name)

    st = SentenceTransformer(str(path), device="cpu")
    print(f"--- {name}: {type(st[0].model).__name__}, attn {st[0].model.config._attn_implementation}, "
          f"max_seq_length {st.max_seq_length}\n{st}")
    assert st.max_seq_length == max_seq_length, (name, st.max_seq_length)
    # ST tokenizes exactly as the golden says.
    features = st.preprocess(TEXTS)
    for key in ("input_ids", "attention_mask"):
        assert torch.equal(features[key], batch[key]), (name, key)

    # Intermediate outputs: run the loaded pipeline module by module.
    with torch.no_grad():
        for module in st:
            features = module(features)
            if isinstance(module, Transformer):
                token_features = dict(features)
            elif isinstance(module, Pooling):
                tensors["pooled"] = features["sentence_embedding"].clone()
            elif isinstance(module, Dense):
                tensors["dense"] = features["sentence_embedding"].clone()
    pooling = next(m for m in st if isinstance(m, Pooling))
    np.testing.assert_allclose(
        tensors["pooled"],
        numpy_pool(tensors["hidden_batch"].numpy(), batch["attention_mask"].numpy(), pooling.pooling_mode),
        atol=2e-5,
        err_msg=name,
    )

    embedding = st.encode(TEXTS, batch_size=len(TEXTS), convert_to_numpy=True)
    np.testing.assert_allclose(embedding, features["sentence_embedding"], atol=1e-6, err_msg=name)
    tensors["embedding"] = torch.from_numpy(embedding)

    golden = {
        "fixture": name,
        "generator": "bench/make_text_fixtures.py",
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "sentence_transformers": sentence_transformers.__version__,
            "tokenizers": tokenizers.__version__,
        },
        "model_class": type(model).__name__,
        "max_seq_length": max_seq_length,
        "hidden_size": int(tensors["hidden_batch"].shape[-1]),
        "embedding_dim": int(embedding.shape[1]),
        "modules": [repr(m).split("(", 1)[0] for m in st],
        "pooling_mode": pooling.pooling_mode,
        "texts": TEXTS,
        "batch": batch_json(tokenizer, batch),
    }

    if st.prompts.get("query"):
        prompt = st.prompts["query"]
        prompted = [prompt + t for t in TEXTS]
        qbatch = encode_batch(tokenizer, prompted, max_seq_length)
        check_raw_tokenizer(path, prompted, qbatch, max_seq_length)
        qfeatures = st.preprocess(TEXTS, prompt=prompt)
        assert torch.equal(qfeatures["input_ids"], qbatch["input_ids"]), name
        tensors["embedding_query"] = torch.from_numpy(
            st.encode(TEXTS, prompt_name="query", batch_size=len(TEXTS), convert_to_numpy=True)
        )
        golden["prompts"] = st.prompts
        golden["query"] = {
            "prompt_name": "query", "prompt": prompt, "texts": prompted, "batch": batch_json(tokenizer, qbatch),
        }

    if all_pooling_modes:
        # embedding_{mode}: ST's Pooling class straight over the Transformer module's token_embeddings.
        dim = int(tensors["hidden_batch"].shape[-1])
        with torch.no_grad():
            for mode in POOLING_MODES:
                out = Pooling(dim, pooling_mode=mode)(dict(token_features))["sentence_embedding"]
                np.testing.assert_allclose(
                    out, numpy_pool(tensors["hidden_batch"].numpy(), batch["attention_mask"].numpy(), mode),
                    atol=2e-5, err_msg=f"{name} {mode}",
                )
                tensors[f"embedding_{mode}"] = out.clone()

    tensors = {key: value.detach().to(torch.float32).contiguous() for key, value in tensors.items()}
    golden["tensors"] = {key: list(value.shape) for key, value in tensors.items()}
    golden.update(extra or {})
    safetensors.torch.save_file(tensors, str(path / "golden.safetensors"), metadata={"fixture": name})
    (path / "golden.json").write_text(compact_json(golden) + "\n", encoding="utf-8")
    return golden


# --------------------------------------------------------------------------------------------------
# The fixtures
# --------------------------------------------------------------------------------------------------

# bert/ — how it was made:
#
#   vocab = WordPieceTrainer(vocab_size=800, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
#           over BertNormalizer(lowercase=True) + BertPreTokenizer, first 3000 scifact sentences
#   tokenizer = BertTokenizer(vocab=vocab, do_lower_case=True, model_max_length=64)
#   torch.manual_seed(0)
#   model = BertModel(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
#       num_attention_heads=4, intermediate_size=64, hidden_act="gelu", max_position_embeddings=64,
#       type_vocab_size=2, pad_token_id=0, initializer_range=0.2))      # then perturb_vectors_
#   modules = [Transformer(dir, max_seq_length=24), Pooling(32, pooling_mode="mean"),
#              Dense(32, 16, bias=True, activation_function=torch.nn.Tanh()), Normalize()]
#   SentenceTransformer(modules=modules, prompts={"query": "query: ", "document": "passage: "})
def make_bert() -> None:
    path = fresh_dir("bert")
    vocab = train_wordpiece(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], "[UNK]", 800)
    tokenizer = BertTokenizer(vocab=vocab, do_lower_case=True, model_max_length=64)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, hidden_act="gelu", max_position_embeddings=64, type_vocab_size=2,
        pad_token_id=0, initializer_range=0.2,
    )
    model = perturb_vectors_(BertModel(config))
    modules = [
        Pooling(HIDDEN, pooling_mode="mean"),
        Dense(HIDDEN, 16, bias=True, activation_function=torch.nn.Tanh()),
        Normalize(),
    ]
    save_model_dir(path, model, tokenizer, modules, max_seq_length=24, prompts=PROMPTS)
    write_goldens(path, encoder_cls=AutoModel, max_seq_length=24, all_pooling_modes=True,
                  extra={"st_layout": "sentence-transformers 6.2"})


# roberta/ — how it was made:
#
#   vocab, merges = BpeTrainer(vocab_size=800, special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
#                   initial_alphabet=ByteLevel.alphabet()) over ByteLevel(add_prefix_space=False);
#                   vocab["<mask>"] = len(vocab)                      # last id, as in roberta-base
#   tokenizer = RobertaTokenizer(vocab=vocab, merges=merges, add_prefix_space=False, model_max_length=64)
#   torch.manual_seed(0)
#   model = RobertaModel(RobertaConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
#       num_attention_heads=4, intermediate_size=64, hidden_act="gelu", max_position_embeddings=66,
#       type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2, initializer_range=0.2))
#   modules = [Transformer(dir, max_seq_length=24), Pooling(32, pooling_mode="cls")]
#   then rewritten to the legacy (ST 2.x, Hub) file layout
def make_roberta() -> None:
    path = fresh_dir("roberta")
    vocab, merges = train_bytelevel_bpe(["<s>", "<pad>", "</s>", "<unk>"], 800)
    vocab["<mask>"] = len(vocab)
    tokenizer = RobertaTokenizer(vocab=vocab, merges=merges, add_prefix_space=False, model_max_length=64)
    torch.manual_seed(0)
    config = RobertaConfig(
        vocab_size=len(vocab), hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, hidden_act="gelu", max_position_embeddings=66, type_vocab_size=1,
        pad_token_id=1, bos_token_id=0, eos_token_id=2, initializer_range=0.2,
    )
    model = perturb_vectors_(RobertaModel(config))
    save_model_dir(path, model, tokenizer, [Pooling(HIDDEN, pooling_mode="cls")], max_seq_length=24,
                   legacy_st_layout=True)
    write_goldens(path, encoder_cls=AutoModel, max_seq_length=24, extra={"st_layout": "legacy (Hub)"})


# xlm-roberta/ — how it was made:
#
#   pieces = UnigramTrainer(vocab_size=800, special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
#            unk_token="<unk>", max_piece_length=12) over WhitespaceSplit + Metaspace("▁", "always");
#            pieces.append(("<mask>", 0.0))                            # last id, as in xlm-roberta-base
#   tokenizer = XLMRobertaTokenizer(vocab=pieces, model_max_length=64)   # no Precompiled normalizer
#   torch.manual_seed(0)
#   model = XLMRobertaModel(XLMRobertaConfig(vocab_size=len(pieces), hidden_size=32, num_hidden_layers=2,
#       num_attention_heads=4, intermediate_size=64, hidden_act="gelu", max_position_embeddings=66,
#       type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2, initializer_range=0.2))
#   modules = [Transformer(dir, max_seq_length=24), Pooling(32, pooling_mode="mean"), Normalize()]
#   then rewritten to the legacy (ST 2.x, Hub) file layout
def make_xlm_roberta() -> None:
    path = fresh_dir("xlm-roberta")
    pieces = train_unigram(["<s>", "<pad>", "</s>", "<unk>"], "<unk>", 800)
    pieces.append(("<mask>", 0.0))
    tokenizer = XLMRobertaTokenizer(vocab=pieces, model_max_length=64)
    torch.manual_seed(0)
    config = XLMRobertaConfig(
        vocab_size=len(pieces), hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, hidden_act="gelu", max_position_embeddings=66, type_vocab_size=1,
        pad_token_id=1, bos_token_id=0, eos_token_id=2, initializer_range=0.2,
    )
    model = perturb_vectors_(XLMRobertaModel(config))
    save_model_dir(path, model, tokenizer, [Pooling(HIDDEN, pooling_mode="mean"), Normalize()], max_seq_length=24,
                   legacy_st_layout=True)
    write_goldens(path, encoder_cls=AutoModel, max_seq_length=24, extra={"st_layout": "legacy (Hub)"})


# mpnet/ — how it was made (vocabulary laid out like all-mpnet-base-v2's: <s> <pad> </s> <unk> first,
# "[UNK]" is the unk token, "<mask>" the last id):
#
#   vocab = WordPieceTrainer(vocab_size=800, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "[UNK]"])
#           over BertNormalizer(lowercase=True) + BertPreTokenizer;  vocab["<mask>"] = len(vocab)
#   tokenizer = MPNetTokenizer(vocab=vocab, do_lower_case=True, unk_token="[UNK]", model_max_length=64)
#   torch.manual_seed(0)
#   model = MPNetModel(MPNetConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
#       num_attention_heads=4, intermediate_size=64, hidden_act="gelu", max_position_embeddings=66,
#       relative_attention_num_buckets=32, pad_token_id=1, bos_token_id=0, eos_token_id=2,
#       initializer_range=0.2))
#   modules = [Transformer(dir, max_seq_length=24), Pooling(32, pooling_mode="mean"), Normalize()]
#   then rewritten to the legacy (ST 2.x, Hub) file layout
def make_mpnet() -> None:
    path = fresh_dir("mpnet")
    vocab = train_wordpiece(["<s>", "<pad>", "</s>", "<unk>", "[UNK]"], "[UNK]", 800)
    vocab["<mask>"] = len(vocab)
    tokenizer = MPNetTokenizer(vocab=vocab, do_lower_case=True, unk_token="[UNK]", model_max_length=64)
    torch.manual_seed(0)
    config = MPNetConfig(
        vocab_size=len(vocab), hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, hidden_act="gelu", max_position_embeddings=66, relative_attention_num_buckets=32,
        pad_token_id=1, bos_token_id=0, eos_token_id=2, initializer_range=0.2,
    )
    model = perturb_vectors_(MPNetModel(config))
    save_model_dir(path, model, tokenizer, [Pooling(HIDDEN, pooling_mode="mean"), Normalize()], max_seq_length=24,
                   legacy_st_layout=True)
    write_goldens(path, encoder_cls=AutoModel, max_seq_length=24, extra={"st_layout": "legacy (Hub)"})


def t5_tokenizer() -> T5Tokenizer:
    """<pad>=0, </s>=1, <unk>=2, the Unigram pieces, then <extra_id_3> … <extra_id_0> (T5's order)."""
    pieces = train_unigram(["<pad>", "</s>", "<unk>"], "<unk>", 800)
    pieces += [(f"<extra_id_{i}>", 0.0) for i in reversed(range(4))]
    return T5Tokenizer(vocab=pieces, extra_ids=4, model_max_length=512)


# t5/ — how it was made (sentence-t5 layout):
#
#   pieces = UnigramTrainer(vocab_size=800, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>",
#            max_piece_length=12) over WhitespaceSplit + Metaspace("▁", "always");
#            pieces += [("<extra_id_3>", 0.0), …, ("<extra_id_0>", 0.0)]
#   tokenizer = T5Tokenizer(vocab=pieces, extra_ids=4, model_max_length=512)  # "$A </s>", no BOS
#   torch.manual_seed(0)
#   model = T5EncoderModel(T5Config(vocab_size=len(pieces), d_model=32, d_kv=8, num_heads=4, d_ff=64,
#       num_layers=2, relative_attention_num_buckets=32, relative_attention_max_distance=128,
#       feed_forward_proj="relu", layer_norm_epsilon=1e-6, pad_token_id=0, eos_token_id=1,
#       decoder_start_token_id=0))      # initializer_factor 1.0; then perturb_vectors_
#   modules = [Transformer(dir, max_seq_length=24), Pooling(32, pooling_mode="mean"),
#              Dense(32, 16, bias=False, activation_function=torch.nn.Identity()), Normalize()]
def make_t5() -> None:
    path = fresh_dir("t5")
    tokenizer = t5_tokenizer()
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=len(tokenizer), d_model=HIDDEN, d_kv=8, num_heads=4, d_ff=64, num_layers=2,
        relative_attention_num_buckets=32, relative_attention_max_distance=128, feed_forward_proj="relu",
        layer_norm_epsilon=1e-6, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )
    model = perturb_vectors_(T5EncoderModel(config))
    modules = [
        Pooling(HIDDEN, pooling_mode="mean"),
        Dense(HIDDEN, 16, bias=False, activation_function=torch.nn.Identity()),
        Normalize(),
    ]
    save_model_dir(path, model, tokenizer, modules, max_seq_length=24)
    write_goldens(path, encoder_cls=T5EncoderModel, max_seq_length=24,
                  extra={"st_layout": "sentence-transformers 6.2"})


# t5-gated/ — how it was made (T5 v1.1 / GTR style): as t5/ but
#
#   T5Config(…, feed_forward_proj="gated-gelu", relative_attention_max_distance=16)
#       # "gated-gelu" → dense_act_fn "gelu_new" (tanh approximation), is_gated_act True: wi_0, wi_1, wo;
#       # max_distance 16 (GTR has 128) so that the texts reach the last, clamped bucket
#   modules = [Transformer(dir, max_seq_length=24), Pooling(32, pooling_mode="mean"), Normalize()]
def make_t5_gated() -> None:
    path = fresh_dir("t5-gated")
    tokenizer = t5_tokenizer()
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=len(tokenizer), d_model=HIDDEN, d_kv=8, num_heads=4, d_ff=64, num_layers=2,
        relative_attention_num_buckets=32, relative_attention_max_distance=16, feed_forward_proj="gated-gelu",
        layer_norm_epsilon=1e-6, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )
    model = perturb_vectors_(T5EncoderModel(config))
    save_model_dir(path, model, tokenizer, [Pooling(HIDDEN, pooling_mode="mean"), Normalize()], max_seq_length=24)
    write_goldens(path, encoder_cls=T5EncoderModel, max_seq_length=24,
                  extra={"st_layout": "sentence-transformers 6.2"})


# modernbert/ — how it was made (tokenizer laid out like ModernBERT's: byte-level BPE, NFC normalizer,
# the specials as added tokens after the BPE vocabulary, config vocab_size rounded up past them):
#
#   vocab, merges = BpeTrainer(vocab_size=700, special_tokens=[], initial_alphabet=ByteLevel.alphabet())
#                   over ByteLevel(add_prefix_space=False)
#   tok = Tokenizer(BPE(vocab, merges)); tok.normalizer = NFC();
#   tok.pre_tokenizer = ByteLevel(add_prefix_space=False); tok.decoder = ByteLevel()
#   tok.add_special_tokens(["[UNK]", "[CLS]", "[SEP]", "[PAD]", AddedToken("[MASK]", lstrip=True)])
#                                                    # ids 700 … 704 = len(vocab) … len(vocab)+4
#   tok.post_processor = TemplateProcessing(single="[CLS]:0 $A:0 [SEP]:0",
#                                           pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1")
#   tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk/cls/sep/pad/mask tokens,
#       model_input_names=["input_ids", "attention_mask"], model_max_length=128)
#   torch.manual_seed(0)
#   model = ModernBertModel(ModernBertConfig(vocab_size=768, hidden_size=32, num_hidden_layers=3,
#       num_attention_heads=4, intermediate_size=64, global_attn_every_n_layers=2, local_attention=8,
#       global_rope_theta=160000.0, local_rope_theta=10000.0, max_position_embeddings=128,
#       hidden_activation="gelu", norm_eps=1e-5, pad/bos/eos/cls/sep_token_id = the added ids,
#       initializer_range=0.2, attn_implementation="eager"))        # then perturb_vectors_
#   modules = [Transformer(dir, max_seq_length=48), Pooling(32, pooling_mode="mean")]
def make_modernbert() -> None:
    path = fresh_dir("modernbert")
    vocab, merges = train_bytelevel_bpe([], 700)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", AddedToken("[MASK]", lstrip=True, special=True)]
    tok.add_special_tokens(specials)
    ids = {str(t): tok.token_to_id(str(t)) for t in specials}
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0",
        pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])],
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]",
        mask_token="[MASK]", model_input_names=["input_ids", "attention_mask"], model_max_length=128,
    )
    vocab_size = (len(tok.get_vocab()) + 63) // 64 * 64  # like ModernBERT's 50368 > 50285 tokens
    torch.manual_seed(0)
    config = ModernBertConfig(
        vocab_size=vocab_size, hidden_size=HIDDEN, num_hidden_layers=3, num_attention_heads=4,
        intermediate_size=64, global_attn_every_n_layers=2, local_attention=8, global_rope_theta=160000.0,
        local_rope_theta=10000.0, max_position_embeddings=128, hidden_activation="gelu", norm_eps=1e-5,
        pad_token_id=ids["[PAD]"], bos_token_id=ids["[CLS]"], eos_token_id=ids["[SEP]"],
        cls_token_id=ids["[CLS]"], sep_token_id=ids["[SEP]"], initializer_range=0.2,
        attn_implementation="eager",
    )
    assert config.layer_types == ["full_attention", "sliding_attention", "full_attention"], config.layer_types
    model = perturb_vectors_(ModernBertModel(config))
    save_model_dir(path, model, tokenizer, [Pooling(HIDDEN, pooling_mode="mean")], max_seq_length=48)
    write_goldens(path, encoder_cls=AutoModel, max_seq_length=48, extra={"st_layout": "sentence-transformers 6.2"})


# refused/ — how they were made:
#
#   pytorch-bin-only/  the bert/ tokenizer; torch.manual_seed(0); BertModel(BertConfig(vocab_size=len(vocab),
#                      hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
#                      max_position_embeddings=64)); ST layout Transformer(max_seq_length=24) → Pooling(mean);
#                      then model.safetensors deleted and torch.save(model.state_dict(), "pytorch_model.bin")
#                      (transformers 5 save_pretrained has no safe_serialization=False any more)
#   unsupported/       GPT2Model(GPT2Config(vocab_size=len(vocab), n_embd=32, n_layer=1, n_head=4,
#                      n_inner=64, n_positions=64)) with a GPT2Tokenizer over the roberta/ BPE vocabulary
#                      (+ "<|endoftext|>"), save_pretrained + ST layout Transformer → Pooling(mean)
#   vocab-mismatch/    the bert/ tokenizer (800 tokens) with BertModel(BertConfig(vocab_size=400, …1 layer…)),
#                      save_pretrained + ST layout Transformer → Pooling(mean) → Normalize
def make_refused() -> None:
    expected = {}
    bert_vocab = train_wordpiece(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], "[UNK]", 800)

    def small_bert(vocab_size: int) -> BertModel:
        torch.manual_seed(0)
        config = BertConfig(
            vocab_size=vocab_size, hidden_size=HIDDEN, num_hidden_layers=1, num_attention_heads=4,
            intermediate_size=64, max_position_embeddings=64, initializer_range=0.2,
        )
        return perturb_vectors_(BertModel(config))

    path = fresh_dir("refused/pytorch-bin-only")
    tokenizer = BertTokenizer(vocab=bert_vocab, do_lower_case=True, model_max_length=64)
    model = small_bert(len(bert_vocab))
    save_model_dir(path, model, tokenizer, [Pooling(HIDDEN, pooling_mode="mean")], max_seq_length=24)
    (path / "model.safetensors").unlink()
    torch.save(model.state_dict(), path / "pytorch_model.bin")
    reloaded = AutoModel.from_pretrained(path)  # Python still loads it
    assert all(torch.equal(a, b) for a, b in zip(reloaded.state_dict().values(), model.state_dict().values()))
    expected["pytorch-bin-only"] = "weights only in pytorch_model.bin (pickle), no model.safetensors"

    path = fresh_dir("refused/unsupported")
    vocab, merges = train_bytelevel_bpe(["<s>", "<pad>", "</s>", "<unk>"], 800)
    vocab["<|endoftext|>"] = len(vocab)
    tokenizer = GPT2Tokenizer(vocab=vocab, merges=merges, model_max_length=64)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(vocab), n_embd=HIDDEN, n_layer=1, n_head=4, n_inner=64, n_positions=64,
                        bos_token_id=len(vocab) - 1, eos_token_id=len(vocab) - 1)
    save_model_dir(path, perturb_vectors_(GPT2Model(config)), tokenizer, [Pooling(HIDDEN, pooling_mode="mean")],
                   max_seq_length=24)
    expected["unsupported"] = "architecture GPT2Model (model_type gpt2): not a supported text encoder"

    path = fresh_dir("refused/vocab-mismatch")
    tokenizer = BertTokenizer(vocab=bert_vocab, do_lower_case=True, model_max_length=64)
    save_model_dir(path, small_bert(400), tokenizer, [Pooling(HIDDEN, pooling_mode="mean"), Normalize()],
                   max_seq_length=24)
    assert len(tokenizer) > 400
    expected["vocab-mismatch"] = (
        f"config.json vocab_size 400 but the tokenizer has {len(tokenizer)} tokens (ids up to {len(tokenizer) - 1})"
    )
    write_json(FIXTURES / "refused" / "expected.json", expected)


def main() -> None:
    torch.set_num_threads(1)  # a fixed summation order, whatever the machine
    FIXTURES.mkdir(parents=True, exist_ok=True)
    make_bert()
    make_roberta()
    make_xlm_roberta()
    make_mpnet()
    make_t5()
    make_t5_gated()
    make_modernbert()
    make_refused()
    print(f"wrote fixtures under {FIXTURES}", file=sys.stderr)


if __name__ == "__main__":
    main()
