"""Column roles from content, for `mmfit train MANIFEST --target COL` and `mmfit init`.

Every column gets a role and the reason for it: image, audio or video files (by extension, by the files
existing under the data root, and by reading a few of them), numbers, categories (few distinct
values), dates and time stamps, free text, the split assignment; identifiers, constant and (nearly)
empty columns are left out. A column that fits no rule cleanly (mostly numbers with a few words among them, paths whose
files are missing) is an error that names the column, what was seen, and the override to give.
A folder holding one subfolder of files per class is a manifest too (`folder_manifest`).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from mmfit.config import FILE_KINDS
from mmfit.data.manifest import (SPLIT_NAMES, WINDOWS_DRIVE, cell_label, file_cell, file_path, is_missing,
                                 stratified_assign)
from mmfit.data.modalities.tabular import parse_number
from mmfit.errors import ConfigError
from mmfit.tasks import task_kind

IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".dcm", ".dicom"}
AUDIO_EXT = {".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif", ".au",  # libsndfile
             ".m4a", ".aac", ".webm", ".weba", ".opus", ".amr", ".3gp", ".caf", ".wma"}  # FFmpeg (PyAV)
VIDEO_EXT = {".mp4", ".mov", ".avi", ".mkv", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ogv", ".ts", ".mts",
             ".webm", ".3gp"}
EITHER = AUDIO_EXT & VIDEO_EXT  # sound or pictures: the files say which
MEDIA_EXT = IMAGE_EXT | AUDIO_EXT | VIDEO_EXT
ROLES = ("text", "image", "audio", "video", "numeric", "categorical", "datetime", "vector", "ignore")
SAMPLE = 24  # values looked at (and files opened, at most 6) per column
VECTOR_ROWS = 2000  # lists of numbers parsed to decide a vector column (its length)
TRACK = "_audio"  # a video column's sound track: the column <video column><TRACK>
NA = [""]
# how spreadsheets mark a missing number: read as missing in a column that is otherwise numbers
MISSING_MARKERS = {"na", "n/a", "n.a.", "nan", "null", "none", "nil", "missing", "-", "--", "?", "#n/a", "#na"}


@dataclass
class Choice:
    column: str
    role: str  # one of ROLES, "target" or "split"
    reason: str
    source: Optional[str] = None  # a column that reads another's files: a video column's sound track
    na: tuple = ()  # cell values this column shows to mark a missing number (data.na_values)


def _present(values: list) -> list:
    return [v for v in values if not is_missing(v, NA)]


def _number(v) -> Optional[float]:
    """A cell as the tabular modality will read it (parse_number: spreadsheet forms too), or None."""
    return parse_number(v)[0]


def by_extension(exts: set[str]) -> Optional[str]:
    """The file role a set of extensions says: image, audio, video, `either` (media files of more than one
    kind, or audio-or-video containers: the files decide), or None."""
    if not exts:
        return None
    for kind, known in (("image", IMAGE_EXT), ("audio", AUDIO_EXT - EITHER), ("video", VIDEO_EXT - EITHER)):
        if exts <= known:
            return kind
    return "either" if exts <= MEDIA_EXT else None


def _sniff(path: Path) -> Optional[str]:
    """'image', 'video' or 'audio' when the file reads as one (its header, not the whole file)."""
    from PIL import Image

    from mmfit.data.modalities.image import is_dicom

    try:
        with open(path, "rb") as f:
            if is_dicom(f.read(132)):
                return "image"
        with Image.open(path) as img:
            img.size  # noqa: B018  (the header is read)
        return "image"
    except Exception:  # Pillow raises many types for what is not an image
        pass
    from mmfit.data.modalities.image import DecodeError
    from mmfit.data.modalities.video import video_info

    try:
        video_info(path)  # a picture stream (FFmpeg's header)
        return "video"
    except (DecodeError, OSError):
        pass
    return "audio" if _has_sound(path) else None


def _sniff_all(paths: list[Path]) -> list[Optional[str]]:
    """_sniff of each file; where the files read as images and videos, all are videos (a video column
    reads animated images too)."""
    kinds = [_sniff(p) for p in paths]
    return ["video" if k else k for k in kinds] if {k for k in kinds if k} == {"image", "video"} else kinds


def files_under(folder: Path) -> list[Path]:
    """The files under `folder` (recursively, hidden ones left out), sorted."""
    return sorted(f for f in folder.rglob("*") if f.is_file() and not f.name.startswith("."))


def _has_sound(path: Path) -> bool:
    """Whether the file has an audio stream that reads (its header only)."""
    from mmfit.data.modalities.audio import audio_info
    from mmfit.data.modalities.image import DecodeError

    try:
        audio_info(path)
        return True
    except (DecodeError, OSError):
        return False


def _existing(values: list, root: Optional[Path]) -> list[Path]:
    """Those of a column's first SAMPLE values that are files under `root` (the working folder if none)."""
    base = root or Path.cwd()
    return [p for p in (base / file_path(v) for v in values[:SAMPLE]) if p.is_file()]


def _files(name: str, values: list, root: Optional[Path]) -> Optional[Choice]:
    """The file roles: -> a Choice, or None when the values are not paths."""
    sample = [str(v).strip() for v in values[:SAMPLE]]
    exts = {Path(v).suffix.lower() for v in sample}
    by_ext = by_extension(exts)
    pathlike = by_ext is not None or all(("/" in v or "\\" in v) and " " not in v.strip("/")
                                         and not DATE.match(v.lower()) for v in sample)  # 10/06/2024: a date
    if not pathlike:
        return None
    found = _existing(sample, root)
    if len(found) < 0.8 * len(sample):
        what = f"{by_ext} paths ({', '.join(sorted(exts))})" if by_ext else "file paths"
        if sum(bool(re.match(r"(https?|s3|gs|ftp)://", v.lower())) for v in sample) >= 0.5 * len(sample):
            raise ConfigError(f"column '{name}' holds URLs ({sample[0][:60]}): mmfit runs offline and fetches "
                              "nothing; download the files and give their paths, or leave the column out with "
                              f"--column {name}=ignore")
        if sum(bool(WINDOWS_DRIVE.match(v)) for v in sample) >= 0.5 * len(sample):
            raise ConfigError(f"column '{name}' holds Windows drive paths ({sample[0][:60]}): write the paths relative "
                              "to the folder that holds the files (backslashes are fine), and give that folder "
                              "with --root")
        raise ConfigError(f"column '{name}' looks like {what}, but {len(sample) - len(found)} of {len(sample)} "
                          f"sampled files do not exist under {root or Path.cwd()}: fix the paths or the data root "
                          f"(--root), or say what it is: --column {name}=text (or =categorical, =ignore)")
    kinds = [k for k in _sniff_all(found[:6]) if k]
    kind = by_ext if by_ext not in (None, "either") else (kinds[0] if kinds and all(k == kinds[0] for k in kinds)
                                                          else None)
    if kind is None or (kinds and any(k != kind for k in kinds)):
        raise ConfigError(f"column '{name}' holds files that are not all images, all audio or all videos "
                          f"(read as: {', '.join(kinds) or 'none of them'}); say which: --column {name}=image, "
                          "=audio or =video")
    how = f"extension {', '.join(sorted(exts))}" if by_ext not in (None, "either") else (
        f"extension {', '.join(sorted(exts))}, content sniffed" if by_ext else "no extension, content sniffed")
    return Choice(name, kind, f"{kind} files ({how}; {len(found)}/{len(sample)} sampled exist, "
                              f"{sum(k == kind for k in kinds)} opened as {kind})")


def sound_track(name: str, values: list, root: Optional[Path], taken: set[str]) -> Optional[Choice]:
    """A video column's sound track as an audio column of its own (`{role: audio, source: name}`,
    named `<name>_audio`), when at least half of the sampled files have one; a clip without sound is
    then an absent input, not an error."""
    files = _existing(_present(values), root)[:6]
    n = sum(_has_sound(p) for p in files)
    if not files or n < 0.5 * len(files):
        return None
    column, k = name + TRACK, 2
    while column in taken:
        column, k = f"{name}{TRACK}{k}", k + 1
    return Choice(column, "audio", f"the sound track of {name} (in {n} of {len(files)} files opened; "
                                   "a clip without one: absent)", source=name)


def _numbers(name: str, values: list, n_rows: int) -> Optional[Choice]:
    nums = [_number(v) for v in values]
    good = [x for x in nums if x is not None]
    if not good:
        return None
    share = len(good) / len(values)
    markers = {str(v).strip() for v, x in zip(values, nums) if x is None}
    if share < 1 and all(m.lower() in MISSING_MARKERS for m in markers):
        choice = _numbers(name, [v for v, x in zip(values, nums) if x is not None], n_rows)
        if choice is not None and choice.role == "numeric":
            shown = ", ".join(repr(m) for m in sorted(markers))
            choice.reason += f"; {shown} in {len(values) - len(good)} cells read as missing"
            choice.na = tuple(sorted(markers))
        return choice
    if share < 1:
        if share >= 0.9:
            bad = sorted(markers)[:3]
            raise ConfigError(f"column '{name}': {100 * share:.0f}% of its values are numbers, but not "
                              f"{', '.join(repr(b) for b in bad)}; say what it is: --column {name}=numeric (the other "
                              f"cells then count as bad values), =categorical or =text")
        return None
    ints = all(float(x).is_integer() for x in good)
    unique = len(set(good))
    if ints and unique >= 0.95 * n_rows and (re.search(r"(^|_|\b)(id|key|index|idx)$", name.lower()) or
                                              _consecutive(good)):
        return Choice(name, "ignore", f"identifier: {unique} distinct integers in {n_rows} rows")
    return Choice(name, "numeric", f"numbers ({unique} distinct, {min(good):g} to {max(good):g})")


MONTH = r"(jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?"
TIME = r"([ t]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?\s*(am|pm)?\s*(z|utc|[+-]\d{2}:?\d{2})?)?"
DATE = re.compile("|".join(rf"^{d}{TIME}$" for d in (
    r"\d{4}[-/.]\d{1,2}[-/.]\d{1,2}",  # 2024-06-10, 2024/6/10
    r"\d{1,2}[-/.]\d{1,2}[-/.](\d{4}|\d{2})",  # 10/06/2024, 6.10.24
    rf"\d{{1,2}}[ -]{MONTH}[ -,]*\d{{4}}",  # 10 June 2024, 10-Jun-2024
    rf"({MONTH}|[a-z]{{3,9}},? {MONTH}) \d{{1,2}}(st|nd|rd|th)?,? \d{{4}}",  # June 10, 2024; Mon, Jun 10 2024
    r"\d{8}t\d{4,6}z?",  # 20240610T1430 (compact ISO; a bare 20240610 is a number)
)))


def _dates(name: str, values: list) -> Optional[Choice]:
    """Dates and time stamps (strings in a date format that a parser reads, or datetime values)."""
    from mmfit.data.modalities.tabular import day_first, parse_date

    first = day_first(values)
    # a string in a date format that parses, or a DataFrame's own datetime / date value
    stamps = [None if isinstance(v, str) and not DATE.match(v.strip().lower()) else parse_date(v, first)[0]
              for v in values]
    ok = [t is not None for t in stamps]
    share = sum(ok) / len(values)
    if share == 1:
        timed = any(t.hour or t.minute or t.second for t in stamps)
        lo, hi = min(stamps), max(stamps)
        return Choice(name, "datetime", f"{'time stamps' if timed else 'dates'} ({lo:%Y-%m-%d} to {hi:%Y-%m-%d}): "
                                        "days elapsed, time of year, day of week" + (", time of day" if timed else "")
                                        + ("; day first" if first else ""))
    if share >= 0.9:
        bad = sorted({str(v) for v, k in zip(values, ok) if not k})[:3]
        raise ConfigError(f"column '{name}': {100 * share:.0f}% of its values are dates, but not "
                          f"{', '.join(repr(b) for b in bad)}; say what it is: --column {name}=datetime (the other "
                          f"cells then count as bad values), =categorical or =text")
    return None


def _consecutive(xs: list[float]) -> bool:
    s = np.sort(np.asarray(xs))
    return len(s) > 2 and bool(np.all(np.diff(s) == 1))


def _strings(name: str, values: list, n_rows: int) -> Choice:
    strs = [str(v).strip() for v in values]
    unique = len(set(strs))
    words = float(np.mean([len(s.split()) for s in strs]))
    length = float(np.mean([len(s) for s in strs]))
    if words >= 3 or length >= 30:
        return Choice(name, "text", f"free text ({words:.1f} words on average, {unique} distinct)")
    if unique <= 50 and unique <= 0.5 * len(strs):
        return Choice(name, "categorical", f"{unique} distinct values")
    if unique >= 0.95 * len(strs) and words < 1.5:
        return Choice(name, "ignore", f"identifier: a different single token in nearly every row ({unique})")
    return Choice(name, "text", f"short text with many distinct values ({unique}, {words:.1f} words on average)")


def infer_column(name: str, values: list, n_rows: int, root: Optional[Path], split_column: str = "split") -> Choice:
    present = _present(values)
    if len(present) < max(1, 0.05 * n_rows):
        return Choice(name, "ignore", f"(nearly) empty: values in {len(present)} of {n_rows} rows")
    if len({str(v).strip() for v in present}) == 1:
        return Choice(name, "ignore", f"constant: {str(present[0])[:30]!r} in every filled row")
    if name == split_column and {str(v).strip().lower() for v in present} <= set(SPLIT_NAMES):
        return Choice(name, "split", "the train / val / test assignment")
    _lists_of_files(name, present)
    return (_blobs(name, present) or _vectors(name, present) or _files(name, present, root)
            or _numbers(name, present, n_rows)
            or _dates(name, present) or _strings(name, present, n_rows))


def _vectors(name: str, values: list) -> Optional[Choice]:
    """Lists of numbers (a JSON list, a Parquet array, or text written as a list: "[0.1, 0.2]"), all
    of one length: features or an embedding computed elsewhere, read as one vector. Lists of words
    are not (None)."""
    from collections import Counter

    from mmfit.data.modalities.tabular import parse_vector

    def listy(v) -> bool:
        return isinstance(v, (list, tuple, np.ndarray)) or isinstance(v, str) and v.lstrip().startswith("[")

    if not values or sum(map(listy, values)) < 0.9 * len(values):
        return None
    looked = values[:VECTOR_ROWS]  # long lists in many rows: the rest are checked row by row in training
    parsed = [parse_vector(v) for v in looked]
    parsed = [(v, x, reason) for v, (x, reason) in zip(values, parsed) if reason or len(x)]  # [] is missing
    good = [x for _, x, reason in parsed if reason is None]
    if not good:
        return None
    if len(good) < len(parsed):
        bad = [str(v)[:30] for v, _, reason in parsed if reason is not None][:2]
        share = len(good) / len(parsed)
        if share < 0.9:
            return None
        raise ConfigError(f"column '{name}': {100 * share:.0f}% of its cells are lists of numbers, but not "
                          f"{', '.join(repr(b) for b in bad)}; say what it is: --column {name}=vector (the other "
                          f"cells then count as bad values), =text or =ignore")
    lengths = Counter(len(x) for x in good)
    if len(lengths) > 1:
        shown = ", ".join(f"{n} numbers in {k} rows" for n, k in lengths.most_common(3)) + (
            f", among the first {len(looked)}" if len(looked) < len(values) else "")
        raise ConfigError(f"column '{name}' holds lists of numbers of different lengths ({shown}); a vector's "
                          f"lists must all be one length: fix the rows, or say --column {name}=vector to train on "
                          f"the {lengths.most_common(1)[0][0]}-number ones (the others then count as bad values), "
                          f"or =ignore")
    n = next(iter(lengths))
    return Choice(name, "vector", f"lists of {n} numbers (a vector, read as one token)")


def _lists_of_files(name: str, values: list) -> None:
    """A column holding several media files in a cell (a JSON list of paths, or one written as text):
    an error naming the column and the way out; it would otherwise read as short text."""
    import ast

    def items(v) -> Optional[list]:
        if isinstance(v, str) and v.lstrip().startswith("["):
            try:
                v = ast.literal_eval(v.strip())
            except (ValueError, SyntaxError):
                return None
        return list(v) if isinstance(v, (list, tuple, np.ndarray)) else None

    lists = [x for x in map(items, values[:SAMPLE]) if x is not None]
    paths = [p for x in lists for p in x if isinstance(p, str)]
    if len(lists) < 0.9 * min(len(values), SAMPLE) or not paths:
        return
    if sum(Path(p).suffix.lower() in MEDIA_EXT for p in paths) >= 0.5 * len(paths):
        most = max(len(x) for x in lists)
        raise ConfigError(f"column '{name}' holds lists of files (up to {most} in a cell); a file column holds one "
                          f"file a cell: put each in a column of its own ({name}_1, {name}_2, ...: a row with fewer "
                          f"leaves the others empty, an absent input), or --column {name}=ignore")


def _blobs(name: str, values: list) -> Optional[Choice]:
    """A column whose cells hold the files themselves (bytes, or a Hugging Face datasets Image/Audio
    struct as Parquet stores it): the kind the sampled contents read as."""
    cells = [file_cell(v) for v in values[:SAMPLE]]
    if not cells or not all(isinstance(c, bytes) for c in cells):
        return None
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        paths = [Path(tmp) / str(k) for k in range(min(6, len(cells)))]
        for path, c in zip(paths, cells):
            path.write_bytes(c)
        kinds = _sniff_all(paths)
    if None in kinds or len(set(kinds)) != 1:
        raise ConfigError(f"column '{name}' holds bytes that do not all read as images, sound or videos of one kind "
                          f"(read as: {', '.join(str(k) for k in kinds)}); say which: --column {name}=image, =audio, "
                          f"=video or =ignore")
    return Choice(name, kinds[0], f"{kinds[0]} files held in the cells ({len(kinds)} of {len(cells)} sampled opened)")


def _numbers_with_markers(values: list) -> tuple[list, set]:
    """A target's filled cells, less the missing-number markers where every other cell is a number
    (-> the cells, the markers found); a column of words keeps them all ('none' may be a class)."""
    present = _present(values)
    markers = {str(v).strip() for v in present if _number(v) is None}
    if markers and len(markers) < len(present) and all(m.lower() in MISSING_MARKERS for m in markers):
        return [v for v in present if str(v).strip() not in markers], markers
    return present, set()


def _target_kind(present: list) -> tuple[str, str, Optional[set]]:
    """-> (the kind: classification, or regression for numbers with many distinct values; the other
    of the two; the distinct numbers where every cell is one, else None)."""
    nums = [_number(v) for v in present]
    distinct = None if not present or any(x is None for x in nums) else set(nums)
    numeric = distinct is not None and len(distinct) > max(20, 0.05 * len(present))
    kinds = ("regression", "classification") if numeric else ("classification", "regression")
    return *kinds, distinct


def target_type(values: list) -> str:
    """classification, unless the target is numbers with many distinct values (regression)."""
    return _target_kind(_numbers_with_markers(values)[0])[0]


def target_choice(name: str, values: list) -> Choice:
    """The target's Choice: '<type> target', and for a column of numbers the count that decided it,
    the other choice, and the missing-number markers it shows (`na`)."""
    present, markers = _numbers_with_markers(values)
    kind, other, nums = _target_kind(present)
    if not nums:
        return Choice(name, "target", f"{kind} target")
    missing = f"; {', '.join(repr(m) for m in sorted(markers))} read as missing" if markers else ""
    return Choice(name, "target", f"{kind} target ({len(nums)} distinct numbers{missing}; --target {name}:{other} "
                                  f"for {other})", na=tuple(sorted(markers)))


def infer_roles(df: pd.DataFrame, targets: list[str], root: Optional[Path] = None,
                overrides: Optional[dict[str, str]] = None, split_column: str = "split") -> list[Choice]:
    """A Choice for every column of `df` (targets and overrides included), in the manifest's order."""
    overrides = dict(overrides or {})
    have = [str(c) for c in df.columns]
    for c in list(targets) + list(overrides):
        if c not in have and not (c in overrides and c.endswith(TRACK) and c[: -len(TRACK)] in have):
            import difflib

            close = difflib.get_close_matches(c, have, n=1, cutoff=0.5)
            raise ConfigError(f"column '{c}' is not in the manifest{f'; did you mean {close[0]!r}?' if close else ''} "
                              f"(columns: {', '.join(have)})")
    for c, role in overrides.items():
        if role not in ROLES:
            raise ConfigError(f"--column {c}={role}: the role must be one of {', '.join(ROLES)}")
    out = []
    for c in have:
        values = df[c].tolist()
        if c in targets:
            out.append(target_choice(c, values))
        elif c in overrides:
            out.append(Choice(c, overrides[c], "given (--column)"))
        else:
            out.append(infer_column(c, values, len(df), root, split_column))
        if out[-1].role == "video":
            track = sound_track(c, values, root, set(have))
            if track and track.column in overrides:
                if overrides[track.column] != "ignore":
                    raise ConfigError(f"--column {track.column}={overrides[track.column]}: the sound track of "
                                      f"{c} is an audio column; leave it out with --column {track.column}=ignore")
                track = Choice(track.column, "ignore", "given (--column): the sound track left out")
            if track:
                out.append(track)
    unused = set(overrides) - {c.column for c in out}
    if unused:
        name = sorted(unused)[0]
        raise ConfigError(f"--column {name}: {name[: -len(TRACK)]} is not a video column with a sound track")
    return out


RARE = 3  # a class with fewer rows than this cannot be in training, validation and test at once


def target_checks(df: pd.DataFrame, targets: dict, na_values: list[str]) -> tuple[list, list[str]]:
    """What the targets' values say before any file is read -> (errors, notes). errors: a RowError per
    row that no target labels (training would find it only after decoding every file); notes: a
    classification target's classes too rare to be validated and tested, or so many classes that
    the column looks like an identifier or a number to regress on."""
    from mmfit.data.errors import RowError

    labelled = [t for t, c in targets.items() if task_kind(c.type).per_row and t in df.columns]
    if not labelled:
        return [], []
    empty = np.stack([[is_missing(v, na_values) for v in df[t].tolist()] for t in labelled])
    errors = [RowError(int(i), ",".join(labelled), "row has no target value") for i in np.flatnonzero(empty.all(0))]
    notes = []
    for k, t in enumerate(labelled):
        if not task_kind(targets[t].type).exclusive:
            continue
        counts = pd.Series([str(v).strip() for v, e in zip(df[t].tolist(), empty[k]) if not e]).value_counts()
        rare = counts[counts < RARE]
        if len(counts) > 20 and len(counts) > 0.5 * counts.sum():
            notes.append(f"target '{t}' has {len(counts)} classes in {counts.sum()} labelled rows: most classes have "
                         f"one row to learn from. If it is a number to predict, give --target {t}:regression; "
                         f"if it is an identifier, choose another target")
        elif len(rare):
            shown = ", ".join(f"{c!r} ({n})" for c, n in list(rare.items())[:5])
            more = f" and {len(rare) - 5} more" if len(rare) > 5 else ""
            notes.append(f"target '{t}': {len(rare)} class(es) with fewer than {RARE} rows — {shown}{more}: "
                         "trained on, but too few to be validated or tested (the scores say nothing about them)")
    return errors, notes


def shared_files(df: pd.DataFrame, choices: list[Choice]) -> list[str]:
    """Notes on file columns whose files recur across rows (the same scan or recording in several
    rows): a seeded split may put copies in training and test, and the test scores would then
    flatter the model."""
    notes = []
    for c in choices:
        if c.role not in FILE_KINDS or c.source:
            continue
        cells = [file_cell(v) for v in _present(df[c.column].tolist())]
        keys, labels = [], {}
        for v in cells:  # bytes by their content
            keys.append(hashlib.sha1(v).hexdigest() if isinstance(v, bytes) else str(v).strip())
            labels.setdefault(keys[-1], cell_label(v))
        counts = pd.Series(keys).value_counts()
        shared = counts[counts > 1]
        if len(shared):
            notes.append(f"column '{c.column}': {int(shared.sum())} rows share their file with another row "
                         f"({len(shared)} files, e.g. {labels[shared.index[0]]!r} in {int(shared.iloc[0])}); a seeded split "
                         "can put copies in training and test. Keep each group in one split with "
                         "data.split.group_column=COLUMN (a patient or recording id), or a split column")
    return notes


VAL_SHARE = 0.15  # of train/, taken for validation where a split folder layout has no val/


def folder_manifest(folder: Path) -> pd.DataFrame:
    """A folder with one subfolder of files per class -> a manifest (paths relative to the folder):
    a `label` column, and an `image`, `audio` or `video` column (by the files' extensions, or their
    content where an extension could be either). Where the subfolders are splits instead (train/,
    val/, test/, each of class subfolders, as torchvision's ImageFolder data sets come), a `split`
    column too; without a val/ (or valid/, dev/), a stratified 15 % of train/ is taken for it. Files
    that are no image, sound or video (Thumbs.db, notes.txt) among media files are left out, and
    said (`df.attrs["read_as"]`), as is the split layout."""
    subs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    split_dirs = {p: SPLIT_NAMES[p.name.lower()] for p in subs if p.name.lower() in SPLIT_NAMES}
    by_split = bool(subs) and len(split_dirs) == len(subs)
    classes = [(c, split_dirs[p]) for p in subs for c in sorted(x for x in p.iterdir() if x.is_dir() and not
                                                                x.name.startswith("."))] if by_split else \
        [(p, None) for p in subs]
    rows, other = [], []
    for sub, split in classes:
        for f in files_under(sub):
            (rows if f.suffix.lower() in MEDIA_EXT else other).append((str(f.relative_to(folder)), sub.name,
                                                                  f.suffix.lower(), split))
    notes = []
    if rows and other:
        shown = ", ".join(sorted({Path(r[0]).name for r in other})[:3])
        notes.append(f"{len(other)} file(s) that are no image, sound or video left out ({shown})")
    else:
        rows = rows or other  # no extension says it: the files' content will
    if not rows:
        raise ConfigError(f"{folder}: a folder manifest needs one subfolder of files per class (or train/, val/, "
                          "test/ folders of them); found none")
    exts = {e for _, _, e, _ in rows}
    kind = by_extension(exts)
    if kind == "either":  # one file of each extension opened: one kind (videos among animated images: video)
        seen = set(_sniff_all([folder / next(r[0] for r in rows if r[2] == e) for e in exts]))
        kind = seen.pop() if len(seen) == 1 else None
    if kind is None:
        raise ConfigError(f"{folder}: the class folders hold files of several kinds ({', '.join(sorted(exts))}); "
                          "a folder manifest holds images, audio or videos, one file per example")
    df = pd.DataFrame({kind: [r[0] for r in rows], "label": [r[1] for r in rows]})
    if by_split:
        split = np.array([r[3] for r in rows], dtype=object)
        names = ", ".join(f"{p.name}/ as {v}" for p, v in split_dirs.items())
        if "val" not in set(split):
            train = np.flatnonzero(split == "train")
            labels = df["label"].to_numpy()[train].astype(str)
            share = stratified_assign(train, labels, int(round(VAL_SHARE * len(train))), 0, np.random.default_rng(0))
            split[[i for i, s in share.items() if s == "val"]] = "val"
            names += f"; no validation folder: {100 * VAL_SHARE:.0f}% of train/ for it (stratified, seed 0)"
        df["split"] = split
        notes.insert(0, f"split folders ({names})")
    if notes:
        df.attrs["read_as"] = "; ".join(notes)
    return df


def read_any(path: Path) -> tuple[pd.DataFrame, Path, bool]:
    """A manifest file, a folder of Parquet parts, or a class-folder -> (table, data root, whether it
    was a class-folder)."""
    from mmfit.data.manifest import parquet_parts, read_manifest

    path = Path(path)
    if path.is_dir() and not parquet_parts(path):  # a folder of Parquet parts is one table (read_manifest)
        return folder_manifest(path), path.resolve(), True
    df = read_manifest(path)
    unnamed = [str(c) for c in df.columns if re.fullmatch(r"Unnamed: \d+", str(c)) or not str(c).strip()]
    if df.shape[1] > 1 and len(unnamed) > df.shape[1] / 2:
        raise ConfigError(f"{path}: {len(unnamed)} of {df.shape[1]} columns have no name in the first row "
                          f"(the first row reads: {', '.join(repr(str(c)) for c in df.columns[:4])}); the first row "
                          "must hold the column names: remove any title or blank rows above the table")
    return df, path.resolve() if path.is_dir() else path.resolve().parent, False



def files_root(df: pd.DataFrame, choices: list[Choice], base: Path) -> Path:
    """The data root a manifest's own files need: `base` (its folder), or, where every path in the file
    columns is absolute and some lie elsewhere, the folder that holds them all (relative paths keep
    `base`: they are relative to it). Paths stay confined to the root; zero-config only moves it to
    what the manifest itself names."""
    base = base.resolve()
    cells = {v for c in choices if c.role in FILE_KINDS and c.source is None
             for v in map(file_cell, _present(df[c.column].tolist())) if not isinstance(v, bytes)}
    paths = [file_path(v) for v in cells if str(v).strip()]
    if not paths or not all(p.is_absolute() for p in paths):
        return base
    folders = {p.parent.resolve() for p in paths}
    if all(f.is_relative_to(base) for f in folders):
        return base
    return Path(os.path.commonpath([str(f) for f in folders]))


def data_config(choices: list[Choice], manifest: Optional[str], root: Optional[Path]) -> dict:
    """The `data` section the choices make: columns, typed targets, the split (its column, or seeded
    70 / 15 / 15 stratified on the first target)."""
    columns = {c.column: {"role": c.role, "source": c.source} if c.source else c.role
               for c in choices if c.role in ROLES and c.role != "ignore"}
    targets = {c.column: c.reason.split()[0] for c in choices if c.role == "target"}
    split = next((c.column for c in choices if c.role == "split"), None)
    out: dict = {"columns": columns, "targets": targets,
                 "split": {"column": split} if split else {"val": 0.15, "test": 0.15, "seed": 0}}
    markers = sorted({m for c in choices if c.role in ("numeric", "target") for m in c.na})
    if markers:
        out["na_values"] = NA + markers
    if manifest:
        out["manifest"] = manifest
    if root is not None:
        out["root"] = str(root)
    return out
