"""Preprocess step: validate raw CSV first (naming bad columns and rows), split 70/15/15, write the spec."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

if __package__:
    from .common import BadInputError, JobArgumentParser, add_schema_args, base_dir, categories_arg, run_job
    from .features import FeatureSpec, label_str
else:
    from common import BadInputError, JobArgumentParser, add_schema_args, base_dir, categories_arg, run_job
    from features import FeatureSpec, label_str

SHOWN = 5  # bad rows named per problem


@dataclass
class RawData:
    """All input rows as text, with where each row came from (for messages)."""

    frame: pd.DataFrame
    files: list[str]
    file_of_row: np.ndarray  # index into `files`
    row_in_file: np.ndarray  # 1-based data row number within its file

    def where(self, positions: np.ndarray) -> list[str]:
        if len(self.files) == 1:
            return [str(int(self.row_in_file[p])) for p in positions]
        return [f"{self.files[self.file_of_row[p]]}:{int(self.row_in_file[p])}" for p in positions]

    def rows_text(self, mask: np.ndarray, column: str | None = None) -> str:
        """'rows 3 ('abc'), 7 ('x') and 2 more' for the rows where `mask` is true."""
        positions = np.flatnonzero(mask)
        labels = self.where(positions[:SHOWN])
        if column is not None:
            values = self.frame[column].iloc[positions[:SHOWN]]
            labels = [f"{label} ({value!r})" for label, value in zip(labels, values, strict=True)]
        more = f" and {len(positions) - SHOWN} more" if len(positions) > SHOWN else ""
        return f"row{'s' if len(positions) > 1 else ''} {', '.join(labels)}{more}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = JobArgumentParser(prog="preprocess.py", description=__doc__)
    add_schema_args(parser)
    parser.add_argument("--input-dir", type=Path, help="default BASE/processing/input/data")
    parser.add_argument("--output-dir", type=Path, help="default BASE/processing/output")
    return parser.parse_args(argv)


def parse_split(text: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(p) for p in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or min(parts) <= 0 or abs(sum(parts) - 1.0) > 1e-6:
        raise BadInputError(
            f"--split {text!r}: expected three positive fractions summing to 1, e.g. 0.7,0.15,0.15"
        )
    return parts  # type: ignore[return-value]


def read_inputs(input_dir: Path) -> RawData:
    """Every *.csv under `input_dir`, as text, concatenated; all files must have the same columns."""
    if not input_dir.is_dir():
        raise BadInputError(f"input directory {input_dir} does not exist")
    files = sorted(
        p
        for p in input_dir.rglob("*")
        if p.is_file() and p.suffix.lower() == ".csv" and p.name[0] not in "._"
    )
    if not files:
        found = sorted(p.name for p in input_dir.rglob("*") if p.is_file())[:10]
        raise BadInputError(f"no *.csv files under {input_dir} (found: {', '.join(found) or 'nothing'})")
    names = [str(p.relative_to(input_dir)) for p in files]
    frames: list[pd.DataFrame] = []
    header: list[str] | None = None
    for path, name in zip(files, names, strict=True):
        if path.stat().st_size == 0:
            raise BadInputError(f"{name}: empty file (0 bytes; a header row is required)")
        try:
            frame = pd.read_csv(path, dtype=str)
        except pd.errors.EmptyDataError:
            raise BadInputError(f"{name}: empty file (no header row)") from None
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise BadInputError(f"{name}: not a readable CSV file: {exc}") from None
        frame.columns = [str(c).strip() for c in frame.columns]
        if header is None:
            header = list(frame.columns)
        elif set(frame.columns) != set(header):
            missing = [c for c in header if c not in frame.columns]
            extra = [c for c in frame.columns if c not in header]
            raise BadInputError(
                f"{name}: columns differ from {names[0]} (missing: {', '.join(missing) or '-'}; "
                f"extra: {', '.join(extra) or '-'})"
            )
        frames.append(frame[header])
    sizes = [len(f) for f in frames]
    data = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0].reset_index(drop=True)
    return RawData(
        frame=data,
        files=names,
        file_of_row=np.repeat(np.arange(len(files)), sizes),
        row_in_file=np.concatenate([np.arange(1, s + 1) for s in sizes]) if sizes else np.zeros(0, int),
    )


def _blank(series: pd.Series) -> np.ndarray:
    return series.isna().to_numpy(dtype=bool) | series.fillna("x").str.strip().eq("").to_numpy(dtype=bool)


def validate(raw: RawData, args: argparse.Namespace, categories: dict[str, list[str]]) -> None:
    """Raise BadInputError listing every problem (contracts.md sec. 4) with its columns and first bad rows."""
    df = raw.frame
    numeric, categorical, target = args.numeric_columns, args.categorical_columns, args.target_column
    features = [*numeric, *categorical]
    setup = []
    if not features:
        setup.append("no feature columns: give --numeric-columns and/or --categorical-columns")
    twice = sorted({c for c in [*features, target] if [*features, target].count(c) > 1})
    if twice:
        setup.append(f"columns given in more than one role: {', '.join(twice)}")
    clash = [c for c in args.drop_columns if c in [*features, target]]
    if clash:
        setup.append(f"--drop-columns also lists feature or target columns: {', '.join(clash)}")
    stray = [c for c in categories if c not in categorical]
    if stray:
        setup.append(f"--categories given for columns that are not categorical: {', '.join(stray)}")
    if setup:
        raise BadInputError("bad schema arguments:\n  - " + "\n  - ".join(setup))
    if df.empty:
        raise BadInputError(f"no data rows in {', '.join(raw.files)} (header only)")

    problems = []
    missing = [c for c in [*features, target] if c not in df.columns]
    if missing:
        problems.append(f"missing columns: {', '.join(missing)} (found: {', '.join(df.columns)})")
    allowed = {*features, target, *args.drop_columns}
    extra = [c for c in df.columns if c not in allowed]
    if extra:
        problems.append(
            f"unexpected columns (not numeric, categorical, target or drop columns): {', '.join(extra)}"
        )
    present = [c for c in [*features, target] if c in df.columns]
    numeric_like = [c for c in present if c in numeric or (c == target and args.problem_type == "regression")]
    for column in numeric_like:
        blank = _blank(df[column])
        bad = pd.to_numeric(df[column].where(~blank), errors="coerce").isna().to_numpy(dtype=bool) & ~blank
        if bad.any():
            problems.append(f"column '{column}': non-numeric values at {raw.rows_text(bad, column)}")
    for column in present:
        blank = _blank(df[column])
        if blank.mean() > args.max_nan_ratio:
            problems.append(
                f"column '{column}': {blank.mean():.1%} missing values (limit {args.max_nan_ratio:.1%}) "
                f"at {raw.rows_text(blank)}"
            )
    for column, values in categories.items():
        if column not in df.columns:
            continue
        known = {label_str(v) for v in values}
        accepted = [v for v in df[column].dropna().unique() if label_str(v) in known]
        unknown_mask = ~_blank(df[column]) & ~df[column].isin(accepted).to_numpy(dtype=bool)
        if unknown_mask.any():
            problems.append(
                f"column '{column}': unknown categories at {raw.rows_text(unknown_mask, column)} "
                f"(allowed: {', '.join(values)})"
            )
    if target in df.columns and args.problem_type != "regression":
        classes = sorted({label_str(v) for v in df[target].dropna()} - {""})
        if len(classes) < 2:
            problems.append(
                f"target '{target}' has {len(classes)} class{'es' if len(classes) != 1 else ''} "
                f"({', '.join(classes) or 'none'}): classification needs at least 2"
            )
        elif args.problem_type == "binary" and len(classes) > 2:
            problems.append(
                f"target '{target}' has {len(classes)} classes ({', '.join(classes[:10])}): "
                "binary needs exactly 2 (use --problem-type multiclass)"
            )
    if problems:
        head = f"input data failed validation ({len(problems)} problem{'s' if len(problems) > 1 else ''})"
        raise BadInputError(head + ":\n  - " + "\n  - ".join(problems))


def clean(raw: RawData, args: argparse.Namespace) -> tuple[pd.DataFrame, int]:
    """Typed frame of numeric + categorical + target columns; rows without a target are dropped."""
    df = raw.frame
    out = pd.DataFrame(index=df.index)
    for column in args.numeric_columns:
        out[column] = pd.to_numeric(df[column].where(~_blank(df[column])), errors="raise").astype("float64")
    for column in args.categorical_columns:
        out[column] = df[column].map(label_str, na_action="ignore").replace("", np.nan)
    target = df[args.target_column]
    if args.problem_type == "regression":
        out[args.target_column] = pd.to_numeric(target.where(~_blank(target)), errors="raise").astype(
            "float64"
        )
    else:
        out[args.target_column] = target.map(label_str, na_action="ignore").replace("", np.nan)
    keep = out[args.target_column].notna().to_numpy()
    return out.loc[keep].reset_index(drop=True), int((~keep).sum())


def split(
    df: pd.DataFrame, target: str, classification: bool, fractions: tuple[float, float, float], seed: int
) -> tuple[dict[str, np.ndarray], bool]:
    """Row indices of train/validation/test (sorted), stratified on the target for classification."""
    from sklearn.model_selection import train_test_split  # imported late: bad input fails fast without it

    index = np.arange(len(df))
    labels = df[target].to_numpy()
    _, val_frac, test_frac = fractions

    def two_way(idx: np.ndarray, test_size: float) -> tuple[np.ndarray, np.ndarray]:
        return train_test_split(
            idx, test_size=test_size, random_state=seed, stratify=labels[idx] if classification else None
        )

    try:
        try:
            train, rest = two_way(index, val_frac + test_frac)
            validation, test = two_way(rest, test_frac / (val_frac + test_frac))
            stratified = classification
        except ValueError:
            if not classification:
                raise
            print(
                "warning: a class is too rare to stratify; splitting without stratification", file=sys.stderr
            )
            classification = False
            train, rest = two_way(index, val_frac + test_frac)
            validation, test = two_way(rest, test_frac / (val_frac + test_frac))
            stratified = False
    except ValueError as exc:
        raise BadInputError(f"too few rows ({len(df)}) to split {fractions}: {exc}") from None
    return {"train": np.sort(train), "validation": np.sort(validation), "test": np.sort(test)}, stratified


def report(
    raw: RawData,
    df: pd.DataFrame,
    parts: dict[str, np.ndarray],
    args: argparse.Namespace,
    spec: FeatureSpec,
    dropped_rows: int,
    stratified: bool,
) -> dict[str, object]:
    target = args.target_column
    rows: dict[str, int] = {"input": len(raw.frame), "dropped_missing_target": dropped_rows, "clean": len(df)}
    rows.update({name: len(idx) for name, idx in parts.items()})
    result: dict[str, object] = {
        "input_files": raw.files,
        "problem_type": args.problem_type,
        "target": target,
        "rows": rows,
        "stratified": stratified,
        "seed": args.seed,
        "feature_names": spec.feature_names,
        "dropped_columns": [c for c in raw.frame.columns if c in args.drop_columns],
        "missing_values": {c: int(df[c].isna().sum()) for c in spec.raw_columns},
    }
    if args.problem_type == "regression":
        result["target_summary"] = {
            name: {k: float(v) for k, v in df[target].iloc[idx].agg(["mean", "std", "min", "max"]).items()}
            for name, idx in {"all": np.arange(len(df)), **parts}.items()
        }
    else:
        result["class_balance"] = {
            name: {
                c: int(n)
                for c, n in df[target]
                .iloc[idx]
                .value_counts()
                .reindex(list(spec.classes), fill_value=0)
                .items()
            }
            for name, idx in {"all": np.arange(len(df)), **parts}.items()
        }
    return result


def preprocess(args: argparse.Namespace) -> None:
    base = base_dir()
    input_dir = args.input_dir or base / "processing" / "input" / "data"
    output_dir = args.output_dir or base / "processing" / "output"
    fractions = parse_split(args.split)
    if not 0.0 <= args.max_nan_ratio <= 1.0:
        raise BadInputError(f"--max-nan-ratio {args.max_nan_ratio}: expected a fraction in [0, 1]")
    categories = categories_arg(args.categories)

    raw = read_inputs(input_dir)
    validate(raw, args, categories)
    df, dropped = clean(raw, args)
    spec = FeatureSpec.fit(
        df,
        target=args.target_column,
        problem_type=args.problem_type,
        numeric=args.numeric_columns,
        categorical=args.categorical_columns,
        categories=categories,
    )
    parts, stratified = split(df, args.target_column, args.problem_type != "regression", fractions, args.seed)
    for name, idx in parts.items():
        path = output_dir / name / f"{name}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        df.iloc[idx].to_csv(path, index=False)
    spec.save(output_dir / "train" / "feature_spec.json")
    summary = report(raw, df, parts, args, spec, dropped, stratified)
    report_path = output_dir / "report" / "data_report.json"
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    sizes = ", ".join(f"{name} {len(idx)}" for name, idx in parts.items())
    print(
        f"preprocess: {len(raw.frame)} rows from {len(raw.files)} file(s) -> {sizes}; "
        f"features {spec.feature_names}"
    )
    if dropped:
        print(f"preprocess: dropped {dropped} rows without a target value")


def main(argv: list[str] | None = None) -> int:
    return run_job("preprocess", lambda: preprocess(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
