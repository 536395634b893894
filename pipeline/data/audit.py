"""Data you can trust: duplicates, leaks across splits and conflicting labels, found
before any training.

Two steps, both on the tokenizer's tokens (what the model sees):

- `resolve_duplicates`, before the split (`data.dedupe`, `data.conflicting_labels`):
  which rows stay and which rows must land in one split together (a text and its
  copies: group-aware splitting, `stratified_group_split`).
- `audit_data`, after it (`data.audit`): what is left, as a JSON-able dict the parent
  run logs (`data_audit.json`), the start-up line and the report show.

Near-duplicates are MinHash signatures of token shingles in datasketch's LSH index,
each candidate pair checked by its exact Jaccard similarity, joined into families with
a union-find; rows without tokens take no part. No TensorFlow here.
"""

from __future__ import annotations

import html
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from omegaconf import DictConfig

# An HTML tag starts with a letter (or /letter, !--): "<3" and "a < b" are text.
_TAG = re.compile(r"<!--.*?-->|</?[A-Za-z][^<>]*>", re.DOTALL)


def strip_html(text: str) -> str:
    """Tags become spaces and entities their characters (`<br />` -> ' ', `&amp;` -> '&')."""
    return html.unescape(_TAG.sub(" ", text))


def text_keys(tokens: Sequence[Sequence[str]]) -> list[str | None]:
    """The text as the model sees it (tokens joined); None for a text with no tokens."""
    return [" ".join(toks) if toks else None for toks in tokens]


# ---------------------------------------------------------------- near-duplicates


class _UnionFind:
    """Families as trees whose root is the family's smallest row index."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))  # a list: item access is several times numpy's

    def find(self, i: int) -> int:
        parent = self.parent
        while parent[i] != i:  # path halving: every other node points to its grandparent
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(self, a: int, b: int) -> bool:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return False
        lo, hi = min(ra, rb), max(ra, rb)
        self.parent[hi] = lo
        return True

    def roots(self) -> np.ndarray:
        return np.asarray([self.find(i) for i in range(len(self.parent))], dtype=np.int64)


def shingles(tokens: Sequence[str], size: int) -> set[str]:
    if size == 1:
        return set(tokens)
    if len(tokens) < size:
        return {" ".join(tokens)} if tokens else set()
    return {" ".join(tokens[i : i + size]) for i in range(len(tokens) - size + 1)}


@dataclass
class NearFamilies:
    """Rows joined by near-duplicate pairs (Jaccard of shingles >= threshold)."""

    family: np.ndarray  # per row: the smallest row index of its family (itself if alone)
    pairs_checked: int
    pairs_joined: int
    example_pairs: list[tuple[int, int, float]] = field(default_factory=list)

    def members(self) -> dict[int, np.ndarray]:
        """Families of two or more rows: root -> row indices."""
        roots, counts = np.unique(self.family, return_counts=True)
        big = set(roots[counts > 1].tolist())
        out: dict[int, list[int]] = defaultdict(list)
        for row, root in enumerate(self.family.tolist()):
            if root in big:
                out[root].append(row)
        return {k: np.asarray(v) for k, v in out.items()}


def _prehashed(value: int) -> int:
    """datasketch's hash function for values hashed already (once per distinct shingle)."""
    return value


def signatures(hashed_sets: Sequence[Sequence[int]], num_perm: int, seed: int) -> np.ndarray:
    """datasketch MinHash values of each set of pre-hashed shingles, one row per set (one
    MinHash reused: only its values are kept)."""
    from datasketch import MinHash

    signature = MinHash(num_perm=num_perm, seed=seed, hashfunc=_prehashed)
    blank = signature.hashvalues.copy()
    matrix = np.empty((len(hashed_sets), num_perm), dtype=blank.dtype)
    for i, values in enumerate(hashed_sets):
        signature.hashvalues = blank.copy()
        signature.update_batch(list(values))
        matrix[i] = signature.hashvalues
    return matrix


def lsh_buckets(matrix: np.ndarray, rows: np.ndarray, bands) -> list[list[int]]:
    """LSH buckets of two or more rows: rows whose signature agrees on a whole band,
    band by band (`bands`: datasketch's (start, end) ranges)."""
    out: list[list[int]] = []
    for start, end in bands:
        band = np.ascontiguousarray(matrix[:, start:end]).view(
            np.dtype((np.void, matrix.dtype.itemsize * (end - start)))
        )[:, 0]
        _, bucket, counts = np.unique(band, return_inverse=True, return_counts=True)
        shared = counts[bucket] > 1
        members_of: dict[int, list[int]] = defaultdict(list)
        for b, r in zip(bucket[shared].tolist(), rows[shared].tolist(), strict=True):
            members_of[b].append(r)
        out.extend(members_of.values())
    return out


def near_families(
    tokens: Sequence[Sequence[str]],
    rows: np.ndarray,
    threshold: float,
    shingle_size: int,
    num_perm: int,
    seed: int,
    miss_weight: float = 0.95,
    n_examples: int = 5,
) -> NearFamilies:
    """Near-duplicate families among `rows` (indices into `tokens`); other rows stay alone.

    Each distinct shingle is hashed once (datasketch's sha1_hash32), not once per text.
    The LSH bands are datasketch's (`MinHashLSH(...).hashranges`, its choice of bands and
    rows for the threshold); the buckets are found with numpy over all signatures at
    once, because MinHashLSH's per-text insert cost 3.4 s of a 5.9 s audit of 95,400
    tweets (the same buckets: tested against its index). A candidate already in the
    row's family is not checked again, so a family of k copies costs about k checks.
    """
    from datasketch import MinHashLSH
    from datasketch.hashfunc import sha1_hash32

    uf = _UnionFind(len(tokens))
    sets = {int(r): shingles(tokens[r], shingle_size) for r in rows}
    sets = {r: s for r, s in sets.items() if s}
    order = sorted(sets)
    hashed: dict[str, int] = {}
    for r in order:
        for sh in sets[r]:
            if sh not in hashed:
                hashed[sh] = sha1_hash32(sh.encode("utf-8", "surrogatepass"))
    # datasketch picks its bands to minimise weighted misses and false candidates; every
    # candidate is checked exactly, so a false one costs a check and a miss a leak
    bands = MinHashLSH(threshold, num_perm, weights=(1 - miss_weight, miss_weight)).hashranges
    matrix = signatures([[hashed[sh] for sh in sets[r]] for r in order], num_perm, seed)
    find = uf.find
    checked = joined = 0
    examples: list[tuple[int, int, float]] = []

    def linked(group: list[int], other: list[int]) -> bool:
        """Some pair across the two families is a near-copy (checked exactly)."""
        nonlocal checked
        for a in group:
            mine = sets[a]
            for b in other:
                checked += 1
                theirs = sets[b]
                jaccard = len(mine & theirs) / len(mine | theirs)
                if jaccard >= threshold:
                    if jaccard < 1.0 and len(examples) < n_examples:
                        examples.append((min(a, b), max(a, b), round(jaccard, 3)))
                    return True
        return False

    for members in lsh_buckets(matrix, np.asarray(order), bands):
        by_root: dict[int, list[int]] = defaultdict(list)
        for m in members:
            by_root[find(m)].append(m)
        if len(by_root) == 1:
            continue  # one family already (an earlier band joined them)
        # Families meeting in this bucket merge when any cross pair is a near-copy: the
        # pairwise rule, with O(families) root lookups instead of O(members^2).
        merged: list[list[int]] = []
        for group in by_root.values():
            target: list[int] | None = None
            for other in merged:
                if other and linked(group, other):
                    joined += 1
                    if target is None:
                        uf.union(group[0], other[0])
                        other.extend(group)
                        target = other
                    else:
                        uf.union(target[0], other[0])
                        target.extend(other)
                        other.clear()
            if target is None:
                merged.append(list(group))
            merged = [m for m in merged if m]
    return NearFamilies(uf.roots(), checked, joined, examples)


def near_families_of(tokens: Sequence[Sequence[str]], rows: np.ndarray, s: DictConfig):
    """`near_families` with the `data.near_duplicates` settings."""
    return near_families(
        tokens,
        rows,
        float(s.threshold),
        int(s.shingle_size),
        int(s.num_perm),
        int(s.seed),
        float(s.miss_weight),
    )


# ---------------------------------------------------------------- before the split


@dataclass
class Resolution:
    """What `data.dedupe` and `data.conflicting_labels` decided, before the split."""

    kept: np.ndarray  # row indices that stay, ascending
    groups: np.ndarray | None  # per row: rows sharing a value go to one split (None: rows)
    dropped_copies: int = 0  # rows that repeated another row's text and label
    dropped_conflicting: int = 0  # rows of texts seen with two or more labels
    grouped_rows: int = 0  # kept rows that share their split with another kept row
    near: NearFamilies | None = None

    def line(self, mode: str) -> str:
        """What the data line says dedupe did ('' when nothing changed)."""
        parts = []
        if self.dropped_copies:
            parts.append(f"{self.dropped_copies} repeated rows dropped")
        if self.dropped_conflicting:
            parts.append(f"{self.dropped_conflicting} rows with conflicting labels dropped")
        if self.grouped_rows:
            what = "near-copies" if mode == "near" else "rows sharing a text"
            parts.append(f"{self.grouped_rows} {what} kept in one split")
        return f"dedupe={mode}: " + ", ".join(parts) if parts else ""


def conflicting_keys(keys: Sequence[str | None], y: np.ndarray) -> set[str]:
    labels: dict[str, set[int]] = defaultdict(set)
    for key, label in zip(keys, y.tolist(), strict=True):
        if key is not None:
            labels[key].add(label)
    return {k for k, v in labels.items() if len(v) > 1}


def resolve_duplicates(
    tokens: Sequence[Sequence[str]],
    y: np.ndarray,
    cfg: DictConfig,
    keep_first: np.ndarray | None = None,
) -> Resolution:
    """dedupe=none keeps every row and splits row by row (as before this existed);
    exact drops rows repeating an earlier row's text and label and keeps the rows of one
    text together; near also keeps each near-copy family together. Rows marked in
    `keep_first` (a loader's fixed test split) win over their copies elsewhere."""
    mode = str(cfg.dedupe)
    n = len(tokens)
    keys = text_keys(tokens)
    drop = np.zeros(n, dtype=bool)
    dropped_conflicting = 0
    if str(cfg.conflicting_labels) == "drop":
        bad = conflicting_keys(keys, y)
        drop |= np.asarray([k in bad for k in keys])
        dropped_conflicting = int(drop.sum())
    if mode == "none":
        return Resolution(np.flatnonzero(~drop), None, 0, dropped_conflicting)

    seen: set[tuple[str, int]] = set()
    dropped_copies = 0
    first_row: dict[str, int] = {}
    groups = np.arange(n)
    order = range(n) if keep_first is None else np.argsort(~keep_first, kind="stable").tolist()
    labels = y.tolist()
    for row in order:
        key, label = keys[row], labels[row]
        if key is None or drop[row]:
            continue
        if (key, label) in seen:
            drop[row] = True
            dropped_copies += 1
            continue
        seen.add((key, label))
        groups[row] = first_row.setdefault(key, row)
    kept = np.flatnonzero(~drop)
    near = None
    if mode == "near":
        s = cfg.near_duplicates
        near = near_families_of(tokens, kept, s)
        # a family's rows and the rows sharing their texts: one group, named by its
        # smallest row (rows of one text share every shingle, so one family anyway)
        groups = near.family[groups]
    sizes = Counter(groups[kept].tolist())
    grouped = sum(c for c in sizes.values() if c > 1)
    return Resolution(kept, groups, dropped_copies, dropped_conflicting, grouped, near)


def stratified_group_split(
    labels: np.ndarray,
    groups: np.ndarray,
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> dict[str, np.ndarray]:
    """Deterministic stratified split over groups: every row of a group lands in one
    split, each class's share as close to the fractions as whole groups allow (a group
    counts for the class of its first row; small classes still get one example in each
    requested split while train keeps one). With one row per group (`stratified_split`)
    it draws exactly the split of versions before groups existed."""
    _, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    sizes = np.bincount(inverse)
    group_label = labels[first]
    rng = np.random.default_rng(seed)
    parts: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(group_label == cls))
        n_rows = int(sizes[members].sum())
        n_val = int(round(val_fraction * n_rows)) or int(val_fraction > 0 and n_rows >= 2)
        n_test = int(round(test_fraction * n_rows)) or int(
            test_fraction > 0 and n_rows - n_val >= 2
        )
        taken_val = taken_test = 0
        for g in members:
            if taken_val < n_val:
                parts["val"].append(g)
                taken_val += sizes[g]
            elif taken_test < n_test:
                parts["test"].append(g)
                taken_test += sizes[g]
            else:
                parts["train"].append(g)
    row_of_group = defaultdict(list)
    for row, g in enumerate(inverse.tolist()):
        row_of_group[g].append(row)
    return {
        k: np.sort(np.asarray([r for g in v for r in row_of_group[g]], dtype=np.int64))
        for k, v in parts.items()
    }


# ---------------------------------------------------------------- after the split


def _short(text: str, width: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


@dataclass
class DataAudit:
    """The audit of one prepared data set: `report` is what `data_audit.json` holds."""

    report: dict[str, Any]
    leaks: dict[str, float]  # "val exact" -> share of that split with a copy in training
    max_leak: float

    @property
    def warnings(self) -> list[str]:
        out = []
        for what, share in self.leaks.items():
            if share > self.max_leak:
                split, kind = what.split()
                name = {"val": "validation", "test": "test"}[split]
                fix = "near" if kind == "near" else "exact (or near)"
                article = "an exact" if kind == "exact" else "a near"
                out.append(
                    f"{share:.1%} of the {name} split has {article} copy in training "
                    f"(data.audit.max_leak={self.max_leak:g}): its scores "
                    f"flatter the model; set data.dedupe={fix}"
                )
        return out

    def leak_tag(self) -> str | None:
        over = [f"{k} {v:.1%}" for k, v in self.leaks.items() if v > self.max_leak]
        return ", ".join(over) or None

    def line(self) -> str:
        r = self.report
        exact, conflict = r["exact"], r["conflicting"]
        parts = [
            f"{exact['copies']} repeated texts ({exact['verbatim_copies']} verbatim)",
            f"{conflict['texts']} with conflicting labels",
        ]
        if r.get("near") is not None:
            parts.append(f"{r['near']['families']} near-copy families")
        if r["rows"]["empty"]:
            parts.append(f"{r['rows']['empty']} empty")
        if r["html"]["texts_changed"]:
            parts.append(f"{r['html']['texts_changed']} with HTML stripped")
        leaks = ", ".join(f"{v:.1%} {k.split()[1]}" for k, v in self.leaks.items() if "val" in k)
        if r.get("label_issues") is not None:
            parts.append(f"{r['label_issues']['count']} likely mislabelled (cleanlab)")
        tail = f"; validation copies of training: {leaks}" if leaks else ""
        return "audit: " + ", ".join(parts) + tail

    def metrics(self) -> dict[str, float]:
        r = self.report
        out = {
            "audit_repeated_texts": r["exact"]["copies"],
            "audit_conflicting_texts": r["conflicting"]["texts"],
            "audit_empty_texts": r["rows"]["empty"],
            "audit_dropped_rows": r["rows"]["dropped_copies"] + r["rows"]["dropped_conflicting"],
            "audit_html_stripped": r["html"]["texts_changed"],
        }
        if r.get("near") is not None:
            out["audit_near_families"] = r["near"]["families"]
        for what, share in self.leaks.items():
            out[f"audit_{what.replace(' ', '_')}_leak"] = share
        for split, stats in r["splits"].items():
            out[f"audit_{split}_truncated"] = stats["truncated"]
        if r.get("label_issues") is not None:
            out["audit_label_issues"] = r["label_issues"]["count"]
        return out


def audit_data(
    texts: Sequence[str],
    tokens: Sequence[Sequence[str]],
    y: np.ndarray,
    class_names: Sequence[str],
    splits: dict[str, np.ndarray],
    resolution: Resolution,
    cfg: DictConfig,
    html_changed: int = 0,
    raw_texts: Sequence[str] | None = None,
) -> DataAudit:
    """Counts, shares and examples of what a reader of the scores should know."""
    a = cfg.audit
    n_examples = int(a.examples)
    keys = text_keys(tokens)
    loaded = len(tokens)
    kept = resolution.kept
    verbatim = Counter(raw_texts if raw_texts is not None else texts)
    by_key = Counter(k for k in keys if k is not None)
    repeated = sorted(((c, k) for k, c in by_key.items() if c > 1), reverse=True)
    conflicts = sorted(conflicting_keys(keys, y))
    verbatim_conflicts = len(conflicting_keys(list(raw_texts or texts), y))
    labels_of: dict[str, Counter] = defaultdict(Counter)
    bad = set(conflicts)
    for key, label in zip(keys, y.tolist(), strict=True):
        if key in bad:
            labels_of[key][class_names[label]] += 1

    near = resolution.near
    if near is None and bool(a.near_duplicates):
        s = cfg.near_duplicates
        near = near_families_of(tokens, kept, s)

    split_of = np.full(loaded, "", dtype=object)
    for name, idx in splits.items():
        split_of[idx] = name
    train_keys = {keys[i] for i in splits["train"] if keys[i] is not None}
    train_families = set() if near is None else {int(near.family[i]) for i in splits["train"]}
    report_splits: dict[str, Any] = {}
    leaks: dict[str, float] = {}
    max_len = int(cfg.max_len)
    for name, idx in splits.items():
        if len(idx) == 0:
            continue
        split_keys = Counter(keys[i] for i in idx if keys[i] is not None)
        stats: dict[str, Any] = {
            "rows": len(idx),
            "classes": {
                class_names[c]: int(n)
                for c, n in enumerate(np.bincount(y[idx], minlength=len(class_names)))
            },
            "empty": int(sum(keys[i] is None for i in idx)),
            "truncated": round(float(np.mean([len(tokens[i]) > max_len for i in idx])), 6),
            "repeated_within": int(sum(c - 1 for c in split_keys.values() if c > 1)),
        }
        if name != "train":
            exact_in_train = [i for i in idx if keys[i] is not None and keys[i] in train_keys]
            stats["exact_in_train"] = len(exact_in_train)
            stats["exact_examples"] = [_short(texts[i]) for i in exact_in_train[:n_examples]]
            leaks[f"{name} exact"] = round(len(exact_in_train) / len(idx), 6)
            if near is not None:
                near_in_train = [i for i in idx if int(near.family[i]) in train_families]
                stats["near_in_train"] = len(near_in_train)
                leaks[f"{name} near"] = round(len(near_in_train) / len(idx), 6)
        report_splits[name] = stats

    report: dict[str, Any] = {
        "settings": {
            "dedupe": str(cfg.dedupe),
            "conflicting_labels": str(cfg.conflicting_labels),
            "strip_html": bool(cfg.strip_html),
            "near_duplicates": {k: cfg.near_duplicates[k] for k in cfg.near_duplicates},
            "max_leak": float(a.max_leak),
        },
        "rows": {
            "loaded": loaded,
            "kept": len(kept),
            "dropped_copies": resolution.dropped_copies,
            "dropped_conflicting": resolution.dropped_conflicting,
            "kept_together": resolution.grouped_rows,
            "empty": int(sum(k is None for k in keys)),
        },
        "html": {"texts_changed": int(html_changed)},
        "exact": {
            "verbatim_copies": int(sum(c - 1 for c in verbatim.values() if c > 1)),
            "copies": int(sum(c - 1 for c, _ in repeated)),
            "texts_repeated": len(repeated),
            "examples": [{"text": _short(k), "rows": c} for c, k in repeated[:n_examples]],
        },
        "conflicting": {
            "texts": len(conflicts),
            "verbatim_texts": verbatim_conflicts,
            "rows": int(sum(sum(labels_of[k].values()) for k in conflicts)),
            "examples": [
                {"text": _short(k), "labels": dict(labels_of[k])} for k in conflicts[:n_examples]
            ],
        },
        "near": None,
        "splits": report_splits,
    }
    if near is not None:  # families of two or more different texts (not only exact copies)
        families = {
            root: rows for root, rows in near.members().items() if len({keys[i] for i in rows}) > 1
        }
        report["near"] = {
            "threshold": float(cfg.near_duplicates.threshold),
            "families": len(families),
            "rows": int(sum(len(v) for v in families.values())),
            "pairs_checked": near.pairs_checked,
            "examples": [
                {"a": _short(texts[i]), "b": _short(texts[j]), "jaccard": jac}
                for i, j, jac in near.example_pairs
            ],
        }
    if bool(a.label_issues):
        report["label_issues"] = find_label_issues(texts, tokens, y, class_names, kept, split_of, a)
    return DataAudit(report, leaks, float(a.max_leak))


def find_label_issues(
    texts: Sequence[str],
    tokens: Sequence[Sequence[str]],
    y: np.ndarray,
    class_names: Sequence[str],
    rows: np.ndarray,
    split_of: np.ndarray,
    a: DictConfig,
) -> dict[str, Any]:
    """Out-of-sample probabilities of a cross-validated TF-IDF + logistic regression
    (the reference's features) through cleanlab: likely mislabelled rows, most likely
    first. They are reported, never dropped."""
    from cleanlab.filter import find_label_issues as cleanlab_issues
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline

    labels = y[rows]
    folds = min(int(a.label_issues_folds), int(np.bincount(labels).min()))
    if folds < 2:
        return {"count": 0, "rows": [], "note": "a class has fewer than 2 rows"}

    def words_and_pairs(row: int) -> list[str]:  # the reference's 1-2-grams of one row
        toks = list(tokens[row])
        return toks + [f"{a} {b}" for a, b in zip(toks, toks[1:], strict=False)]

    model = make_pipeline(
        TfidfVectorizer(analyzer=words_and_pairs, sublinear_tf=True),
        LogisticRegression(C=float(a.label_issues_c), max_iter=1000),
    )
    cv = StratifiedKFold(folds, shuffle=True, random_state=0)
    probs = cross_val_predict(model, list(rows), labels, cv=cv, method="predict_proba")
    ranked = cleanlab_issues(labels, probs, return_indices_ranked_by="self_confidence")
    table = [
        {
            "row": int(rows[i]),
            "split": str(split_of[rows[i]]),
            "text": _short(texts[rows[i]]),
            "label": class_names[labels[i]],
            "suggested": class_names[int(np.argmax(probs[i]))],
            "label_probability": round(float(probs[i, labels[i]]), 4),
        }
        for i in ranked[: int(a.label_issues_max)]
    ]
    return {"count": len(ranked), "rows": table}
