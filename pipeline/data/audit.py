"""Data you can trust: duplicates, leaks across splits and conflicting labels, found
before any training.

Two steps, both on the tokenizer's tokens (what the model sees):

- `resolve_duplicates` (`pipeline.data.duplicates`), before the split: which rows stay
  and which rows must land in one split together.
- `audit_data`, after it (`data.audit`): what is left, as a JSON-able dict the parent
  run logs (`data_audit.json`), the start-up line and the report show. No TensorFlow.
"""

from __future__ import annotations

import html
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.config.plain import to_plain
from pipeline.config.schema import AuditConfig, DataConfig
from pipeline.data.duplicates import Resolution, conflicting_keys, near_families_of, text_keys

# An HTML tag starts with a letter (or /letter, !--): "<3" and "a < b" are text.
_TAG = re.compile(r"<!--.*?-->|</?[A-Za-z][^<>]*>", re.DOTALL)


def strip_html(text: str) -> str:
    """Tags become spaces and entities their characters (`<br />` -> ' ', `&amp;` -> '&')."""
    return html.unescape(_TAG.sub(" ", text))


# ---------------------------------------------------------------- near-duplicates


# ---------------------------------------------------------------- before the split


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


def split_stats(
    texts: Sequence[str],
    tokens: Sequence[Sequence[str]],
    keys: Sequence[str | None],
    y: np.ndarray,
    class_names: Sequence[str],
    splits: dict[str, np.ndarray],
    near,
    max_len: int,
    n_examples: int,
) -> tuple[dict[str, Any], dict[str, float]]:
    """Per split: rows, classes, empty and truncated texts, repeats, and what it shares
    with train (exact copies, near-duplicate families); the leak shares."""
    train_keys = {keys[i] for i in splits["train"] if keys[i] is not None}
    train_families = set() if near is None else {int(near.family[i]) for i in splits["train"]}
    report_splits: dict[str, Any] = {}
    leaks: dict[str, float] = {}
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
    return report_splits, leaks


def near_report(near, keys: Sequence[str | None], texts: Sequence[str], threshold: float):
    """The near-duplicate families of two or more different texts (not only exact copies)."""
    families = {
        root: rows for root, rows in near.members().items() if len({keys[i] for i in rows}) > 1
    }
    return {
        "threshold": threshold,
        "families": len(families),
        "rows": int(sum(len(v) for v in families.values())),
        "pairs_checked": near.pairs_checked,
        "examples": [
            {"a": _short(texts[i]), "b": _short(texts[j]), "jaccard": jac}
            for i, j, jac in near.example_pairs
        ],
    }


def audit_data(
    texts: Sequence[str],
    tokens: Sequence[Sequence[str]],
    y: np.ndarray,
    class_names: Sequence[str],
    splits: dict[str, np.ndarray],
    resolution: Resolution,
    cfg: DataConfig,
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
    report_splits, leaks = split_stats(
        texts, tokens, keys, y, class_names, splits, near, int(cfg.max_len), n_examples
    )

    report: dict[str, Any] = {
        "settings": {
            "dedupe": str(cfg.dedupe),
            "conflicting_labels": str(cfg.conflicting_labels),
            "strip_html": bool(cfg.strip_html),
            "near_duplicates": to_plain(cfg.near_duplicates),
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
    if near is not None:
        report["near"] = near_report(near, keys, texts, float(cfg.near_duplicates.threshold))
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
    a: AuditConfig,
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
