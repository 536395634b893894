"""`python -m pipeline.predict MODEL_URI --input FILE.csv|FOLDER --out preds.csv`: score
raw texts with a logged or registered text model (`models:/NAME/latest`, `runs:/ID/model`,
a folder). `key=value` overrides pick the tracking store, as for a search. Progress on
stderr for long inputs; bad input is one line and exit 2."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.predict",
        description="Classify raw texts with a text model the search logged or registered.",
    )
    parser.add_argument("model_uri", help="models:/NAME/latest, runs:/RUN_ID/model or a folder")
    parser.add_argument("--input", required=True, type=Path, help="a CSV, or a folder of .txt")
    parser.add_argument("--text-column", default="text", help="the CSV's text column")
    parser.add_argument("--out", type=Path, default=None, help="CSV to write (default: stdout)")
    parser.add_argument("--explain", action="store_true", help="add tokens and their weights")
    parser.add_argument(
        "overrides", nargs="*", help="config overrides for the store, e.g. tracking.uri=..."
    )
    args = parser.parse_intermixed_args(argv)

    from pipeline.runtime.cli import composed, guarded

    base = composed(args.overrides)

    def run() -> int:
        from pipeline import progress
        from pipeline.runtime.cli import import_quietly
        from pipeline.serving.batch import beside, read_texts, score

        rows, texts = read_texts(args.input, args.text_column)  # before TensorFlow loads
        import_quietly(bool(base.search.verbose), "pipeline.serving.text_model")
        from pipeline.serving.text_model import load_text_model

        model = load_text_model(args.model_uri, str(base.tracking.uri))
        scored = score(model, texts, explain=args.explain)
        out = beside(rows, scored)
        if args.out is None:
            out.to_csv(sys.stdout, index=False)
        else:
            from pipeline.search.state_journal import write_text_atomically

            args.out.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomically(args.out, out.to_csv(index=False))  # all rows or none
            progress.say(f"wrote {len(out)} predictions to {args.out}")
        return 0

    return guarded(run, verbose=bool(base.search.verbose))


if __name__ == "__main__":
    from pipeline.runtime.cli import exit_without_teardown

    exit_without_teardown(main)
