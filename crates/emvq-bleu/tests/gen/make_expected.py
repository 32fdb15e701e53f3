#!/usr/bin/env python3
"""Make the test fixtures of emvq-bleu and sacreBLEU's expected values for them.

Deterministic: the same inputs give byte-identical outputs. It

1. perturbs real references (newstest2014.de, Multi30k test_2016_flickr.de)
   into hypothesis files (word drops, swaps, case changes, punctuation,
   quotes, dashes, accents, CJK, emoji, odd whitespace, empty lines, ...)
   and writes a small synthetic edge-case pair and a Unicode fuzz pair;
2. runs sacreBLEU on them (library calls equivalent to its CLI, and the CLI
   itself for a few text outputs) and writes everything emvq-bleu's tests
   compare against to tests/fixtures/expected.json.

Only generated text is written under tests/fixtures (gzip-compressed where
large); the reference data sets are read from the shared data folder.

Usage, from the workspace root:
    python3 -m pip install --target .pytools sacrebleu==2.5.1
    PYTHONPATH=.pytools python3 crates/emvq-bleu/tests/gen/make_expected.py
"""

import gzip
import json
import os
import random
import re
import subprocess
import sys

import sacrebleu
from sacrebleu.metrics import BLEU, CHRF
from sacrebleu.significance import PairedTest

HERE = os.path.dirname(os.path.abspath(__file__))
CRATE = os.path.normpath(os.path.join(HERE, "..", ".."))
FIXTURES = os.path.join(CRATE, "tests", "fixtures")
SHARED = os.environ.get(
    "EMVQ_SHARED_DATA", os.path.normpath(os.path.join(CRATE, "..", "..", "..", "shared", "data"))
)

NT_REF = "shared:wmt14/newstest2014.de"
M30K_REF = "shared:multi30k/test_2016_flickr.de.gz"


# --------------------------------------------------------------------------
# Reading and writing, the way sacreBLEU's command line reads files
# --------------------------------------------------------------------------

def resolve(name):
    if name.startswith("shared:"):
        return os.path.join(SHARED, name[len("shared:"):])
    return os.path.join(FIXTURES, name)


def read_lines(name):
    path = resolve(name)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", newline="\n") as fh:
        return [line.rstrip() for line in fh]


def write_lines(name, lines):
    path = resolve(name)
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    if path.endswith(".gz"):
        # mtime=0 keeps the file byte-identical across runs.
        with open(path, "wb") as raw:
            with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
                gz.write(data)
    else:
        with open(path, "wb") as fh:
            fh.write(data)


# --------------------------------------------------------------------------
# Perturbations
# --------------------------------------------------------------------------

QUOTES = ["„", "“", "”", "«", "»", "‚", "‘", "’", '"', "&quot;", "'"]
DASHES = ["-", "–", "—", "‐", "−"]
ACCENTS = {"a": "à", "e": "é", "o": "ô", "u": "ü", "i": "ï", "n": "ñ", "c": "ç", "s": "ş"}
DECOMPOSED = {"ä": "a\u0308", "ö": "o\u0308", "ü": "u\u0308", "é": "e\u0301"}
INSERTS = [
    "中文", "東京都", "我爱你。", "日本語、", "😀", "👍🏽", "👨‍👩‍👧", "🇩🇪", "€", "£5", "§", "©", "™",
    "ΟΔΥΣΣΕΑΣ", "Σ.", "İstanbul", "ǅemal", "STRAẞE", "ﬁnal", "Ⅻ", "½", "٣٤", "x²", "→", "≠",
    "&amp;", "&lt;b&gt;", "<skipped>", "1.000,50", "3-4", "2014.", "e.g.", "(sic)", "[1]", "...",
    "\u00a0", "\u2009", "\u3000", "\u200b", "\ufeff", "\x1c", "\t", "\u2028", "o\u0302", "𝔘𝔫𝔦",
]
WHITESPACE = [" ", "  ", "\u00a0", "\u2009", "\t", "\u3000", "\x1f"]


def perturb_token(tok, rng):
    r = rng.random()
    if r < 0.15:
        return tok.upper()
    if r < 0.30:
        return tok.lower()
    if r < 0.40:
        return tok.capitalize()
    if r < 0.55:
        return "".join(ACCENTS.get(c, c) if rng.random() < 0.5 else c for c in tok)
    if r < 0.65:
        return "".join(DECOMPOSED.get(c, c) for c in tok)
    if r < 0.80:
        return rng.choice(QUOTES) + tok + rng.choice(QUOTES)
    if r < 0.90:
        return tok + rng.choice([",", ".", ";", ":", "!", "?", ")", "…"])
    return tok + rng.choice(DASHES) + tok[:3]


def perturb(line, rng, strength):
    """One hypothesis from one reference line; `strength` in [0, 1]."""
    if rng.random() < 0.02 * strength:
        return ""
    toks = line.split(" ")
    toks = [t for t in toks if rng.random() >= 0.25 * strength] or toks[:1]
    for i in range(len(toks) - 1):
        if rng.random() < 0.15 * strength:
            toks[i], toks[i + 1] = toks[i + 1], toks[i]
    toks = [perturb_token(t, rng) if rng.random() < 0.3 * strength else t for t in toks]
    if rng.random() < 0.2 * strength:
        toks.insert(rng.randrange(len(toks) + 1), rng.choice(INSERTS))
    out = ""
    for i, t in enumerate(toks):
        if i:
            out += rng.choice(WHITESPACE) if rng.random() < 0.05 * strength else " "
        out += t
    r = rng.random()
    if r < 0.1 * strength and out.endswith("."):
        out = out[:-1] + " ."  # a tokenized period
    elif r < 0.15 * strength:
        out = out.rstrip(".")
    if rng.random() < 0.03 * strength:
        out = rng.choice(WHITESPACE) + out + rng.choice(WHITESPACE)
    return out


def edge_pairs():
    """Hand-written (hypothesis, reference) pairs for corner cases."""
    pairs = [
        ("", ""),
        ("", "Ein Hund."),
        ("Ein Hund.", ""),
        ("   ", "Leer"),
        ("ΟΔΥΣΣΕΑΣ ΣΑΣ Σ.", "Οδυσσεας σας σ."),
        ("İSTANBUL İst", "i̇stanbul İst"),
        ("ǅemal ǄEMAL ǆemal", "ǆemal"),
        ("STRAẞE Straße", "straße strasse"),
        ("我爱北京天安门。", "我爱北京。"),
        ("東京は日本の首都です", "東京は日本の首都である"),
        ("한국어 문장입니다.", "한국어 문장이다."),
        ("Preis: 1.000,50 € (netto)", "Preis: 1.000,50€ (netto)."),
        ("Er sagte: „Hallo“ — und ging.", "Er sagte: \"Hallo\" - und ging."),
        ("&quot;x&quot; &amp; y &lt;z&gt;", "\"x\" & y <z>"),
        ("a<skipped>b c", "ab c"),
        ("Zeile-\nmit Umbruch", "Zeilemit Umbruch"),
        ("emoji 😀👍🏽 👨‍👩‍👧 🇩🇪!", "emoji 😀 👍🏽 👨‍👩‍👧 🇩🇪 !"),
        ("x\u00a0y\u2009z\u3000w", "x y z w"),
        ("tab\tsep\x1cunit\x1dsep", "tab sep unit sep"),
        ("zero\u200bwidth \ufeffbom", "zero width bom"),
        ("ﬁnal ﬂow", "final flow"),
        ("3-4 5.6 7,8 9. ,10 .11", "3 - 4 5.6 7,8 9 . , 10 . 11"),
        ("(hi) [there] {you}", "( hi ) [ there ] { you }"),
        ("it's isn't 'quoted'", "it 's is n't ' quoted '"),
        ("a . b . c .", "a. b. c."),
        ("...!?", "... ! ?"),
        ("Ⅻ ½ ٣٤ x² ①", "12 1/2 34 x2 1"),
        ("o\u0302 e\u0301", "ô é"),
        ("𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "Unicode"),
        ("a" * 300, "a" * 299),
        ("the the the the the the", "the cat"),
        ("one", "one two three four five six seven"),
        ("one two three four five six seven", "one"),
    ]
    return pairs


def fuzz_lines(rng, n):
    """Lines of random code points drawn from many blocks."""
    blocks = [
        (0x20, 0x7E), (0xA0, 0x24F), (0x250, 0x2FF), (0x300, 0x36F), (0x370, 0x3FF),
        (0x400, 0x4FF), (0x530, 0x58F), (0x590, 0x5FF), (0x600, 0x6FF), (0x900, 0x97F),
        (0xE00, 0xE7F), (0x10A0, 0x10FF), (0x13A0, 0x13FF), (0x1680, 0x169F), (0x1C80, 0x1CBF),
        (0x1E00, 0x1FFF), (0x2000, 0x206F), (0x2070, 0x209F), (0x20A0, 0x20CF), (0x2100, 0x214F),
        (0x2150, 0x218F), (0x2190, 0x23FF), (0x2460, 0x24FF), (0x2500, 0x27BF), (0x2C00, 0x2C7F),
        (0x2C80, 0x2CFF), (0x2E00, 0x2E7F), (0x3000, 0x303F), (0x3040, 0x30FF), (0x4E00, 0x4E7F),
        (0xA640, 0xA69F), (0xA720, 0xA7FF), (0xAB70, 0xABBF), (0xAC00, 0xAC7F), (0xFB00, 0xFB4F),
        (0xFE10, 0xFE6F), (0xFF00, 0xFFEF), (0x10400, 0x1044F), (0x104B0, 0x104FF),
        (0x10570, 0x105BF), (0x10C80, 0x10CFF), (0x118A0, 0x118FF), (0x16E40, 0x16E9F),
        (0x1D400, 0x1D7FF), (0x1E900, 0x1E95F), (0x1F300, 0x1FAFF), (0x20000, 0x2007F),
        (0x2F800, 0x2F8FF), (0xE0000, 0xE007F),
    ]
    lines = []
    for _ in range(n):
        chars = []
        for _ in range(rng.randrange(0, 40)):
            if rng.random() < 0.2:
                chars.append(" ")
                continue
            if rng.random() < 0.05:
                chars.append("\u03a3")
                continue
            lo, hi = rng.choice(blocks)
            c = rng.randrange(lo, hi + 1)
            if c in (0x0A,) or 0xD800 <= c <= 0xDFFF:
                continue
            chars.append(chr(c))
        lines.append("".join(chars))
    return lines


MIX_ALPHABET = [
    "a", "B", "7", " ", "  ", ".", ",", "-", "'", '"', "&quot;", "&amp;", "&lt;", "<skipped>",
    "\t", "\u00a0", "\u3000", "\u2028", "\x1c", "\x85", "„", "“", "—", "€", "½", "٣", "Σ", "ΑΣ",
    "İ", "ǅ", "ẞ", "\u0301", "\u200b", "中", "文", "。", "😀", "👍🏽", "\ufeff", "\U0010fffd",
    "\ue000", "x\u0308", "1.000,5", "3-4", "(x)", "[y]", "ab.", "cd,", "é", "Ω", "σς", "ÄÖÜ", "Ǆ",
    "ﬀ", "\u2163", "\u1e9e", "\U0001e900", "\U00010400", "\u10a0", "ß",
]


def mix_lines(rng, n):
    """Reference/hypothesis pairs built from an alphabet of tricky pieces."""
    def line():
        return "".join(rng.choice(MIX_ALPHABET) for _ in range(rng.randrange(0, 30)))

    refs, hyps = [], []
    for _ in range(n):
        ref = line()
        toks = ref.split(" ")
        if rng.random() < 0.3:
            rng.shuffle(toks)
        refs.append(ref)
        hyps.append(" ".join(toks) if rng.random() < 0.7 else line())
    return refs, hyps


def make_fixtures():
    os.makedirs(FIXTURES, exist_ok=True)
    nt = read_lines(NT_REF)
    m30k = read_lines(M30K_REF)

    rng = random.Random(20180601)
    write_lines("nt_hyp.txt.gz", [perturb(line, rng, 0.6) for line in nt])

    rng = random.Random(30000)
    base = [perturb(line, rng, 0.5) for line in m30k]
    write_lines("m30k_base.txt.gz", base)
    rng = random.Random(30001)
    write_lines("m30k_sys1.txt.gz", [perturb(line, rng, 1.0) for line in m30k])
    rng = random.Random(30002)
    # Nearly the baseline: a few lines redone lightly.
    write_lines(
        "m30k_sys2.txt.gz",
        [perturb(r, rng, 0.3) if i % 97 == 5 else b for i, (r, b) in enumerate(zip(m30k, base))],
    )
    rng = random.Random(30003)
    write_lines("m30k_ref2.txt.gz", [perturb(line, rng, 0.4) for line in m30k])

    pairs = edge_pairs()
    # Hypotheses may not contain a newline once written as lines.
    write_lines("edge_hyp.txt", [h.replace("\n", " ") for h, _ in pairs])
    write_lines("edge_ref.txt", [r for _, r in pairs])

    rng = random.Random(424242)
    fuzz_ref = fuzz_lines(rng, 300)
    write_lines("fuzz_ref.txt", fuzz_ref)
    write_lines("fuzz_hyp.txt", [perturb(line, rng, 0.8) for line in fuzz_ref])

    mix_ref, mix_hyp = mix_lines(random.Random(5), 1500)
    write_lines("mix_ref.txt.gz", mix_ref)
    write_lines("mix_hyp.txt.gz", mix_hyp)


# --------------------------------------------------------------------------
# Expected values
# --------------------------------------------------------------------------

def corpus_streams(refs):
    return [read_lines(r) for r in refs]


def bleu_case(case_id, hyp, refs, tokenize="13a", lowercase=False, smooth_method="exp",
              smooth_value=None, effective_order=False):
    metric = BLEU(lowercase=lowercase, tokenize=tokenize, smooth_method=smooth_method,
                  smooth_value=smooth_value, effective_order=effective_order)
    hyps = read_lines(hyp)
    streams = corpus_streams(refs)
    stats = metric._extract_corpus_statistics(hyps, streams)
    sums = [sum(col) for col in zip(*stats)]
    score = metric._compute_score_from_stats(list(sums))
    n = metric.max_ngram_order
    return {
        "id": case_id,
        "metric": "bleu",
        "hyp": hyp,
        "refs": refs,
        "config": {
            "tokenize": tokenize, "lowercase": lowercase, "smooth_method": smooth_method,
            "smooth_value": smooth_value, "effective_order": effective_order,
        },
        "expected": {
            "score": score.score,
            "counts": [int(x) for x in sums[2:2 + n]],
            "totals": [int(x) for x in sums[2 + n:]],
            "precisions": score.precisions,
            "bp": score.bp,
            "sys_len": int(sums[0]),
            "ref_len": int(sums[1]),
            "signature": str(metric.get_signature()),
            "text": score.format(width=2, signature=str(metric.get_signature())),
        },
    }


def chrf_case(case_id, hyp, refs, word_order=0, lowercase=False, whitespace=False,
              eps_smoothing=False, char_order=6, beta=2):
    metric = CHRF(char_order=char_order, word_order=word_order, beta=beta, lowercase=lowercase,
                  whitespace=whitespace, eps_smoothing=eps_smoothing)
    hyps = read_lines(hyp)
    stats = metric._extract_corpus_statistics(hyps, corpus_streams(refs))
    sums = [sum(col) for col in zip(*stats)]
    score = metric._compute_score_from_stats(list(sums))
    return {
        "id": case_id,
        "metric": "chrf",
        "hyp": hyp,
        "refs": refs,
        "config": {
            "char_order": char_order, "word_order": word_order, "beta": beta,
            "lowercase": lowercase, "whitespace": whitespace, "eps_smoothing": eps_smoothing,
        },
        "expected": {
            "score": score.score,
            "name": score.name,
            "stats": [int(x) for x in sums],
            "signature": str(metric.get_signature()),
        },
    }


def sentence_case(case_id, metric_name, hyp, refs, limit, **config):
    hyps = read_lines(hyp)[:limit]
    streams = [s[:limit] for s in corpus_streams(refs)]
    if metric_name == "bleu":
        metric = BLEU(**config)
    else:
        metric = CHRF(**config)
    scores = []
    for i, h in enumerate(hyps):
        s = metric.sentence_score(h, [s[i] for s in streams])
        scores.append(s.score)
    return {
        "id": case_id,
        "metric": metric_name,
        "hyp": hyp,
        "refs": refs,
        "limit": limit,
        "config": config,
        "scores": scores,
        "signature": str(metric.get_signature()),
    }


def paired_case(case_id, test_type, systems, refs, metric_names, n_samples=0):
    streams = corpus_streams(refs)
    metrics = {}
    for name in metric_names:
        if name == "bleu":
            metrics["BLEU"] = BLEU(references=streams)
        else:
            metrics["CHRF"] = CHRF(references=streams)
    named = [(s, read_lines(s)) for s in systems]
    named[0] = ("Baseline: " + named[0][0], named[0][1])
    ps = PairedTest(named, metrics, references=None, test_type=test_type, n_samples=n_samples)
    sigs, scores = ps()
    results = {}
    for metric, vals in scores.items():
        if metric == "System":
            continue
        results[metric] = [
            {k: None if v is None else float(v)
             for k, v in (("score", r.score), ("p_value", r.p_value), ("mean", r.mean),
                          ("ci", r.ci))}
            for r in vals
        ]
    return {
        "id": case_id,
        "test": test_type,
        "n_samples": ps.n_samples,
        "systems": systems,
        "refs": refs,
        "metrics": metric_names,
        "results": results,
        "signatures": {k: str(v) for k, v in sigs.items()},
    }


def cli_case(case_id, args, hyps, refs):
    """sacreBLEU's own command-line text output."""
    cmd = [sys.executable, "-m", "sacrebleu"] + [resolve(r) for r in refs]
    cmd += ["-i"] + [resolve(h) for h in hyps] + ["-f", "text"] + args
    env = dict(os.environ, NO_COLOR="1")
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return {"id": case_id, "args": args, "hyps": hyps, "refs": refs, "stdout": out}


def main():
    make_fixtures()
    nt, m30k = "nt_hyp.txt.gz", "m30k_base.txt.gz"
    m30k_refs2 = [M30K_REF, "m30k_ref2.txt.gz"]
    m30k_refs3 = [M30K_REF, "m30k_ref2.txt.gz", "m30k_sys2.txt.gz"]
    edge, edge_refs = "edge_hyp.txt", ["edge_ref.txt"]
    fuzz, fuzz_refs = "fuzz_hyp.txt", ["fuzz_ref.txt"]
    mix, mix_refs = "mix_hyp.txt.gz", ["mix_ref.txt.gz"]

    bleu = []
    for hyp, refs, tag in ((nt, [NT_REF], "nt"), (m30k, [M30K_REF], "m30k"),
                           (m30k, m30k_refs2, "m30k-2ref"), (m30k, m30k_refs3, "m30k-3ref"),
                           (edge, edge_refs, "edge"), (fuzz, fuzz_refs, "fuzz"),
                           (mix, mix_refs, "mix")):
        for tok in ("13a", "none", "intl", "char", "zh"):
            bleu.append(bleu_case(f"{tag}-{tok}", hyp, refs, tokenize=tok))
            bleu.append(bleu_case(f"{tag}-{tok}-lc", hyp, refs, tokenize=tok, lowercase=True))
        for method, value in (("none", None), ("floor", None), ("floor", 0.3), ("add-k", None),
                              ("add-k", 0.5), ("exp", None)):
            for eff in (False, True):
                bleu.append(bleu_case(f"{tag}-{method}-{value}-eff{eff}", hyp, refs,
                                      smooth_method=method, smooth_value=value,
                                      effective_order=eff))

    chrf = []
    for hyp, refs, tag in ((nt, [NT_REF], "nt"), (m30k, [M30K_REF], "m30k"),
                           (m30k, m30k_refs3, "m30k-3ref"), (edge, edge_refs, "edge"),
                           (fuzz, fuzz_refs, "fuzz"), (mix, mix_refs, "mix")):
        for wo in (0, 2):
            chrf.append(chrf_case(f"{tag}-w{wo}", hyp, refs, word_order=wo))
            chrf.append(chrf_case(f"{tag}-w{wo}-lc", hyp, refs, word_order=wo, lowercase=True))
            chrf.append(chrf_case(f"{tag}-w{wo}-ws", hyp, refs, word_order=wo, whitespace=True))
            chrf.append(chrf_case(f"{tag}-w{wo}-eps", hyp, refs, word_order=wo,
                                  eps_smoothing=True))
        chrf.append(chrf_case(f"{tag}-c4w1b1", hyp, refs, char_order=4, word_order=1, beta=1))
        chrf.append(chrf_case(f"{tag}-c8w2b3", hyp, refs, char_order=8, word_order=2, beta=3))

    sentence = [
        sentence_case("m30k-sent-default", "bleu", m30k, [M30K_REF], 400, effective_order=True),
        sentence_case("m30k-sent-noeff", "bleu", m30k, [M30K_REF], 400),
        sentence_case("m30k-sent-floor", "bleu", m30k, [M30K_REF], 400,
                      smooth_method="floor", effective_order=True),
        sentence_case("m30k-sent-addk", "bleu", m30k, [M30K_REF], 400,
                      smooth_method="add-k", effective_order=True),
        sentence_case("m30k-sent-none", "bleu", m30k, [M30K_REF], 400,
                      smooth_method="none", effective_order=True),
        sentence_case("m30k-sent-intl-lc", "bleu", m30k, m30k_refs2, 400,
                      tokenize="intl", lowercase=True, effective_order=True),
        sentence_case("edge-sent-default", "bleu", edge, edge_refs, 1000, effective_order=True),
        sentence_case("edge-sent-char", "bleu", edge, edge_refs, 1000, tokenize="char",
                      effective_order=True),
        sentence_case("mix-sent-char-lc", "bleu", mix, mix_refs, 600, tokenize="char",
                      lowercase=True, effective_order=True),
        sentence_case("mix-sent-13a-lc", "bleu", mix, mix_refs, 600, lowercase=True,
                      effective_order=True),
        sentence_case("mix-sent-chrfpp-lc", "chrf", mix, mix_refs, 600, word_order=2,
                      lowercase=True),
        sentence_case("m30k-sent-chrf", "chrf", m30k, [M30K_REF], 400),
        sentence_case("m30k-sent-chrfpp", "chrf", m30k, m30k_refs2, 400, word_order=2),
        sentence_case("edge-sent-chrfpp", "chrf", edge, edge_refs, 1000, word_order=2),
    ]

    systems = ["m30k_base.txt.gz", "m30k_sys1.txt.gz", "m30k_sys2.txt.gz"]
    paired = [
        paired_case("m30k-bs", "bs", systems, [M30K_REF], ["bleu", "chrf"]),
        paired_case("m30k-ar", "ar", systems, [M30K_REF], ["bleu", "chrf"]),
    ]

    cli = [
        cli_case("m30k-bleu-chrf", ["-m", "bleu", "chrf"], [m30k], [M30K_REF]),
        cli_case("m30k-bleu-w2-floor-lc", ["-w", "2", "-s", "floor", "-lc", "-tok", "intl"],
                 [m30k], m30k_refs2),
        cli_case("m30k-chrfpp", ["-m", "chrf", "--chrf-word-order", "2"], [m30k], [M30K_REF]),
        cli_case("nt-bleu", [], [nt], [NT_REF]),
    ]

    expected = {
        "generator": "crates/emvq-bleu/tests/gen/make_expected.py",
        "sacrebleu_version": sacrebleu.__version__,
        "python_version": sys.version.split()[0],
        "bleu": bleu,
        "chrf": chrf,
        "sentence": sentence,
        "paired": paired,
        "cli": cli,
    }
    text = json.dumps(expected, indent=1, ensure_ascii=False)
    # Lists of numbers on one line each keep the file small and readable.
    text = re.sub(r"\[\n[-0-9.e,\s]*\]", lambda m: re.sub(r"\s+", "", m.group(0)), text)
    with open(os.path.join(FIXTURES, "expected.json"), "w", encoding="utf-8") as fh:
        fh.write(text + "\n")
    total = sum(os.path.getsize(os.path.join(FIXTURES, f)) for f in os.listdir(FIXTURES))
    print(f"fixtures written: {total} bytes")


if __name__ == "__main__":
    main()
