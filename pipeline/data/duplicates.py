"""Duplicates before the split (`data.dedupe`, `data.conflicting_labels`): which rows stay
and which rows must land in one split together (a text and its copies: group-aware
splitting, `stratified_group_split`).

Near-duplicates are MinHash signatures of token shingles in datasketch's LSH index,
each candidate pair checked by its exact Jaccard similarity, joined into families with
a union-find; rows without tokens take no part. No TensorFlow here.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from pipeline.config.schema import DataConfig, NearDuplicatesConfig


def text_keys(tokens: Sequence[Sequence[str]]) -> list[str | None]:
    """The text as the model sees it (tokens joined); None for a text with no tokens."""
    return [" ".join(toks) if toks else None for toks in tokens]


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


def near_families_of(tokens: Sequence[Sequence[str]], rows: np.ndarray, s: NearDuplicatesConfig):
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
    cfg: DataConfig,
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
