"""`mmfit serve RUN`: a FastAPI app around a Predictor, with micro-batching, limits and a web page.

Endpoints: `GET /` (the web page), `POST /predict` (multipart: files + form fields, or JSON with
base64 files), `POST /predict/batch` (JSON), for a model with a matching task `POST /embed` (a
record's vectors in the shared space) and `POST /search` (the best rows of a gallery built from a
manifest at start, `--gallery`), `GET /health`, `GET /metadata`, `GET /docs` and `/openapi.json`. Every bad request gets a 4xx JSON `{"detail": message}`; the server never opens
a path a client sends (file inputs must be the file's contents).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import platform
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from importlib import metadata
from importlib.resources import files
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
import pandas as pd
from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi_offline import FastAPIOffline as App  # /docs without a CDN
from starlette.datastructures import UploadFile

from mmfit.config import input_fields
from mmfit.deploy.batching import MicroBatcher
from mmfit.data.manifest import read_manifest
from mmfit.deploy.predictor import Predictor, top_k

FILE_ROLES = ("image", "audio", "video")


@dataclass
class ServeOptions:
    max_batch: int = 32  # rows per forward pass (1 turns micro-batching off)
    max_wait_ms: float = 5.0  # how long the first queued request waits for company
    timeout_s: float = 30.0  # per request, queueing included
    max_body_mb: float = 20.0
    max_image_pixels: int = 25_000_000  # width x height, checked before decoding (decompression bombs)
    max_audio_seconds: float = 60.0
    # frames x channels of a whole audio file, from its header: a file of silence compresses to
    # almost nothing whatever its length, rate and channels (60 s of stereo at 48 kHz)
    max_audio_samples: int = 5_760_000
    max_video_frames: int = 1_800  # frames of a whole video from its header (a minute at 30 fps), decoded in turn
    max_request_mb: float = 100.0  # decoded size of one request's files, estimated from their headers
    # of all requests being answered at once: a request that would go over waits for room (at most
    # inflight_wait_s), then gets 503 + Retry-After
    max_inflight_mb: float = 100.0
    inflight_wait_s: float = 10.0
    max_text_chars: int = 5_000
    max_batch_items: int = 256  # items in one /predict/batch request


class RequestError(Exception):
    def __init__(self, status: int, message: str, headers: Optional[dict] = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


async def answer(request, work, timeout_s: float, poll_s: float = 0.1):
    """Await `work` (the batcher's job) for one request; cancel it, so that it leaves its batch,
    when its client disconnects (-> 499, which nobody reads) or time is up (-> 504)."""
    loop = asyncio.get_running_loop()
    job = asyncio.ensure_future(work)
    deadline = loop.time() + timeout_s
    try:
        while True:
            done, _ = await asyncio.wait({job}, timeout=max(0.0, min(poll_s, deadline - loop.time())))
            if done:
                return job.result()
            if loop.time() >= deadline:
                raise RequestError(504, f"prediction took longer than {timeout_s:g} s")
            if await request.is_disconnected():
                raise RequestError(499, "the client closed the connection")
    finally:
        job.cancel()  # nothing if it is done


class Record(dict):
    """A validated record {column: value}, and `cost`: the bytes its files take once decoded, as
    their headers tell (what the in-flight budget counts)."""

    cost: int = 0


class Budget:
    """Bytes of decoded input that requests being answered may hold at once. A request that would go
    over waits (first come, first served) for others to finish, at most `wait_s`; then it gets 503
    with Retry-After, nothing of it decoded."""

    def __init__(self, limit: int, wait_s: float = 10.0):
        self.limit, self.used, self.wait_s = limit, 0, wait_s
        self._room: Optional[asyncio.Condition] = None

    @asynccontextmanager
    async def hold(self, cost: int):
        if cost > self.limit:
            raise RequestError(413, f"the files of this request take {cost / 2**20:.0f} MB decoded, over the "
                                    f"server's whole budget of {self.limit / 2**20:.0f} MB: send fewer items at once")
        if cost:
            self._room = self._room or asyncio.Condition()
            async with self._room:
                try:
                    await asyncio.wait_for(self._room.wait_for(lambda: self.used + cost <= self.limit), self.wait_s)
                except asyncio.TimeoutError:
                    raise RequestError(503, f"the server is busy decoding other requests' files "
                                            f"({self.used / 2**20:.0f} of {self.limit / 2**20:.0f} MB in use); retry "
                                            "shortly", {"Retry-After": "1"}) from None
                self.used += cost
        try:
            yield
        finally:
            if cost:
                async with self._room:
                    self.used -= cost
                    self._room.notify_all()


def _versions(backend: str) -> dict:
    names = ["mmfit", "torch", "fastapi"] + (["onnxruntime"] if backend == "onnx" else [])
    out = {"python": platform.python_version()}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = None
    return out


@dataclass
class Gallery:
    """Rows to search (`mmfit serve --gallery MANIFEST`): their vectors per side of a matching task,
    computed once at start, and what a hit shows (the row's text and number cells, file names)."""

    task: str
    vectors: dict  # side column -> [N, D]
    table: pd.DataFrame
    rows: int

    @classmethod
    def build(cls, pred: Predictor, manifest: Union[str, Path], task: Optional[str] = None) -> "Gallery":
        task = pred.matching_task(task)
        df = read_manifest(Path(manifest))
        sides = [c for c in pred.pre.targets[task].cfg.between if c in df.columns]
        if not sides:
            raise ValueError(f"--gallery {manifest}: it has neither side of {task} "
                             f"({', '.join(pred.pre.targets[task].cfg.between)})")
        root = Path(manifest).resolve().parent
        vectors = {c: pred.embed(df[[c]], column=c, task=task, root=root) for c in sides}
        return cls(task, vectors, df, len(df))

    def shown(self, i: int) -> dict:
        return {c: (None if pd.isna(v) else v.item() if hasattr(v, "item") else v) for c, v in self.table.iloc[i].items()}


class Service:
    """Validation and limits of one model's inputs; the app below only routes to it."""

    def __init__(self, predictor: Predictor, options: ServeOptions, backend: str):
        self.pred, self.opt, self.backend = predictor, options, backend
        # a column reading another (a video's sound track) is no field of its own
        self.columns = input_fields(predictor.cfg.data)
        self.required = [c for c, cc in predictor.cfg.data.columns.items() if cc.required]
        self.gallery: Optional[Gallery] = None

    # ------------------------------------------------------------------ describing
    def device(self) -> str:
        """Where the model runs: the torch device, or ONNX Runtime's first provider."""
        providers = getattr(self.pred.model, "providers", None)
        return providers[0] if providers else str(self.pred.device)

    def metadata(self) -> dict:
        cfg, pre = self.pred.cfg, self.pred.pre
        inputs = []
        for c, role in self.columns.items():
            item = {"name": c, "type": role, "required": c in self.required}
            if role in FILE_ROLES:
                item["send"] = "multipart file, or base64 string in JSON"
            elif role == "vector":
                item["send"] = f"a list of {pre.tabular.sizes[c]} numbers in JSON, or text written as one: [0.1, 0.2]"
            inputs.append(item)
        tasks = {}
        for t, proc in pre.targets.items():
            tasks[t] = {"type": proc.type}
            if proc.kind.paired:
                tasks[t]["between"] = list(proc.cfg.between)
            elif proc.kind.labels:
                tasks[t]["labels"] = list(proc.classes)
        model: dict[str, Any] = {"run": self.pred.run_dir.name, "backend": self.backend, "device": self.device(),
                                 "precision": self.pred.precision, "fusion": cfg.model.fusion,
                                 "encoders": {m: cfg.model.encoders[m].name if m in cfg.model.encoders else "scratch"
                                              for m in self.pred.model.modalities}}
        if self.backend == "torch":
            model["parameters"] = sum(p.numel() for p in self.pred.model.parameters())
        steps = self.pred.run.record()["steps"]
        if steps:
            model["compression"] = [s["method"] for s in steps]
        explain = next((t for t, p in pre.targets.items() if p.kind.per_row), None)
        out = {"inputs": inputs, "tasks": tasks, "explain_task": explain, "model": model,
               "limits": asdict(self.opt), "versions": _versions(self.backend)}
        if self.gallery is not None:
            out["gallery"] = {"rows": self.gallery.rows, "sides": list(self.gallery.vectors)}
        return out

    # ------------------------------------------------------------------ validating
    def _file_bytes(self, col: str, value: Any) -> tuple[bytes, int]:
        if isinstance(value, (bytes, bytearray)):
            data = bytes(value)
        elif isinstance(value, str):
            text = value.split(",", 1)[1] if value.startswith("data:") else value
            try:
                data = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                raise RequestError(422, f"field '{col}': not valid base64; send the {self.columns[col]} file's "
                                        "contents base64-encoded (file paths are not accepted)") from None
        else:
            raise RequestError(422, f"field '{col}': expected the {self.columns[col]} file, got {type(value).__name__}")
        if not data:
            raise RequestError(422, f"field '{col}': the file is empty")
        return data, self._check_file(col, data)

    def _check_file(self, col: str, data: bytes) -> int:
        """Size limits read from the header, before anything is decoded. -> the bytes decoding takes
        (images: RGBA pixels; audio: float samples of every channel, only as far as the model reads)."""
        role = self.columns[col]
        if role == "image":
            from PIL import Image

            from mmfit.data.modalities.image import DecodeError, image_size

            try:
                w, h, _ = image_size(data)  # the header only (Pillow's, or a DICOM file's)
            except Image.DecompressionBombError as e:  # Pillow's own guard, far above max_image_pixels
                raise RequestError(413, f"field '{col}': image too large: {e}") from None
            except DecodeError as e:
                raise RequestError(422, f"field '{col}': {e}") from None
            except Exception as e:  # Pillow raises many types for data that is not an image
                raise RequestError(422, f"field '{col}': cannot decode image: {e}") from None
            if w * h > self.opt.max_image_pixels:
                raise RequestError(413, f"field '{col}': image is {w}x{h} = {w * h:,} pixels; the limit is "
                                        f"{self.opt.max_image_pixels:,}")
            return 4 * w * h
        if role == "video":
            return self._check_video(col, data)
        else:
            from mmfit.data.modalities.audio import audio_info
            from mmfit.data.modalities.image import DecodeError

            try:
                info = audio_info(data)  # the header only (libsndfile's, else FFmpeg's)
            except DecodeError as e:
                raise RequestError(422, f"field '{col}': {e}") from None
            # a header without a length (a live WebM recording) is still decoded only as far as the model reads
            if info.duration is not None and info.duration > self.opt.max_audio_seconds:
                raise RequestError(413, f"field '{col}': audio is {info.duration:.1f} s long; the limit is "
                                        f"{self.opt.max_audio_seconds:g} s")
            read = self._reader(col).frames_read(info.samplerate)
            frames = read if info.frames is None else info.frames
            if frames * info.channels > self.opt.max_audio_samples:
                raise RequestError(413, f"field '{col}': audio is {frames:,} frames x {info.channels} channels "
                                        f"({info.samplerate:,} Hz) = {frames * info.channels:,} samples; the "
                                        f"limit is {self.opt.max_audio_samples:,}")
            return 4 * min(frames, read) * info.channels

    def _check_video(self, col: str, data: bytes) -> int:
        """A clip's frame size and frame count from its header; -> one decoded frame plus the frames kept."""
        from mmfit.data.modalities.image import DecodeError
        from mmfit.data.modalities.video import video_info

        try:
            info = video_info(data)
        except DecodeError as e:
            raise RequestError(422, f"field '{col}': {e}") from None
        if info.width * info.height > self.opt.max_image_pixels:
            raise RequestError(413, f"field '{col}': video frames are {info.width}x{info.height} = "
                                    f"{info.width * info.height:,} pixels; the limit is {self.opt.max_image_pixels:,}")
        if info.frames is not None and info.frames > self.opt.max_video_frames:
            raise RequestError(413, f"field '{col}': video has {info.frames:,} frames; the limit is "
                                    f"{self.opt.max_video_frames:,}")
        if info.frames is None and info.seconds is not None and info.seconds * 60 > self.opt.max_video_frames:
            raise RequestError(413, f"field '{col}': video is {info.seconds:.1f} s long; the limit is "
                                    f"{self.opt.max_video_frames:,} frames")
        return 4 * info.width * info.height + int(np.prod(self._reader(col).feature_shape()))

    def _reader(self, col: str):
        """The processor that decodes a field: its column's, or (a field that is only a source) the
        column's that reads it."""
        files = self.pred.pre.files
        return files.get(col) or next(files[c] for c, cc in self.pred.cfg.data.columns.items() if cc.source == col)

    def record(self, fields: dict) -> Record:
        """Client fields -> a record for Predictor.prepare; raises RequestError."""
        unknown = [k for k in fields if k not in self.columns]
        if unknown:
            raise RequestError(422, f"unknown field '{unknown[0]}'; the inputs are: {', '.join(self.columns)}")
        rec = Record()
        for col, value in fields.items():
            if value is None or (isinstance(value, str) and value == "" and self.columns[col] not in FILE_ROLES):
                continue
            role = self.columns[col]
            if role in FILE_ROLES:
                rec[col], cost = self._file_bytes(col, value)
                rec.cost += cost
            elif role == "text":
                if not isinstance(value, str):
                    raise RequestError(422, f"field '{col}': expected text, got {type(value).__name__}")
                if len(value) > self.opt.max_text_chars:
                    raise RequestError(413, f"field '{col}': text is {len(value):,} characters; the limit is "
                                            f"{self.opt.max_text_chars:,}")
                rec[col] = value
            elif role == "vector":  # a JSON list, or (a form field) text written as one
                if not isinstance(value, (str, list)):
                    raise RequestError(422, f"field '{col}': expected a list of numbers, got {type(value).__name__}")
                rec[col] = value
            else:
                if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                    raise RequestError(422, f"field '{col}': expected a {role} value, got {type(value).__name__}")
                rec[col] = str(value) if role in ("categorical", "datetime") else value
        if not rec:
            raise RequestError(422, f"no input given; send at least one of: {', '.join(self.columns)}")
        missing = [c for c in self.required if c not in rec]
        if missing:
            raise RequestError(422, f"missing required field '{missing[0]}'")
        if rec.cost > self.opt.max_request_mb * 2**20:
            raise RequestError(413, f"the files of this request take {rec.cost / 2**20:.0f} MB decoded; the limit is "
                                    f"{self.opt.max_request_mb:g} MB")
        return rec

    def records(self, items: list) -> tuple[list[Optional[dict]], list[dict], list[int]]:
        """A batch's items -> (results with each bad item's {"error"}, the good items' records, where
        those sit among the items)."""
        results: list[Optional[dict]] = [None] * len(items)
        records, where = [], []
        for i, item in enumerate(items):
            try:
                if not isinstance(item, dict):
                    raise RequestError(422, "an item must be a JSON object {field: value}")
                records.append(self.record(item))
                where.append(i)
            except RequestError as e:
                results[i] = {"error": e.message}
        return results, records, where

    def embed(self, rec: dict) -> dict:
        """One validated record -> each matching task's vector for every side the record has."""
        data, errors = self.pred.prepare([rec])
        if errors:
            e = errors[0]
            raise RequestError(422, f"field '{e.column}': {e.reason}" if e.column != "*" else e.reason)
        preds = self.pred.predict_tensors(data)
        out = {}
        for t, proc in self.pred.pre.targets.items():
            if proc.kind.paired:
                a, b = proc.cfg.between
                out[t] = {c: preds[t]["output"][0, i].tolist() for i, c in enumerate((a, b)) if c in rec}
        if not out:
            raise RequestError(404, "this model has no matching task: nothing to embed")
        if not any(out.values()):
            raise RequestError(422, "send a side of a matching task: " + ", ".join(
                f"{t}: {' or '.join(self.pred.pre.targets[t].cfg.between)}" for t in out))
        return out

    def search(self, rec: dict, k: int) -> dict:
        """One record with one side of the matching task -> the gallery's k best rows of the other side."""
        if self.gallery is None:
            raise RequestError(404, "no gallery: start the server with --gallery MANIFEST")
        g = self.gallery
        vectors = self.embed(rec)[g.task]
        side = next(iter(vectors))
        other = [c for c in self.pred.pre.targets[g.task].cfg.between if c != side][0]
        if other not in g.vectors:
            raise RequestError(422, f"the gallery has no '{other}' column to search for a '{side}' query")
        hits = top_k(np.asarray([vectors[side]], np.float32), g.vectors[other], k)
        return {"task": g.task, "query": side, "results": [
            {"rank": int(h["rank"]), "row": int(h["gallery"]), "score": float(h["score"]),
             "fields": g.shown(int(h["gallery"]))}
            for _, h in hits.iterrows()]}

    def process(self, records: list[dict], explain: bool, alive: Optional[Callable[[], list]] = None) -> list[dict]:
        """Validated records -> per record its prediction, or {"error": message} (a file that does
        not decode, a number that is not one). Runs on the batcher's thread, a batch at a time;
        the records whose request has left (`alive()` false) are not decoded, or not run through
        the model if they left while the batch was decoded."""
        alive = alive or (lambda: [True] * len(records))  # without a batcher: every record is served
        gone = {"error": "the request was cancelled"}
        out: list[Optional[dict]] = [None if a else gone for a in alive()]
        live = [i for i, r in enumerate(out) if r is None]
        data, errors = self.pred.prepare([records[i] for i in live])
        for e in errors:
            i = live[e.row]
            if out[i] is None:
                out[i] = {"error": f"field '{e.column}': {e.reason}" if e.column != "*" else e.reason}
        good = [i for i in live if out[i] is None]  # data's rows, in order
        still = alive()
        if not all(still[i] for i in good):
            keep = [k for k, i in enumerate(good) if still[i]]
            for i in good:
                if not still[i]:
                    out[i] = gone
            data, good = data.subset(keep), [good[k] for k in keep]
        for i, r in zip(good, self.pred.infer(data, explain) if good else []):
            out[i] = r
        return out


class BodyLimit:
    """ASGI middleware: a body over `max_bytes` gets 413, by its Content-Length or while it streams."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        size = dict(scope["headers"]).get(b"content-length", b"")
        if size.isdigit() and int(size) > self.max_bytes:
            msg = f"request body is {int(size):,} bytes; the limit is {self.max_bytes:,}"
            return await JSONResponse({"detail": msg}, 413)(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            msg = await receive()
            seen += len(msg.get("body", b""))
            if seen > self.max_bytes:
                raise RequestError(413, f"request body is over the limit of {self.max_bytes:,} bytes")
            return msg

        await self.app(scope, limited, send)


def _content_type(request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def _json_body(request) -> Any:
    body = await request.body()
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RequestError(400, f"request body is not valid JSON: {e}") from None


async def request_fields(request, svc: Service) -> dict:
    """The fields of one /predict request: JSON {"inputs": {...}}, or a multipart / urlencoded form
    (files as uploads; a form's file input left empty means the input is absent)."""
    ctype = _content_type(request)
    if ctype == "application/json":
        body = await _json_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("inputs"), dict):
            raise RequestError(422, 'expected a JSON object {"inputs": {field: value, ...}}')
        extra = [k for k in body if k != "inputs"]
        if extra:
            raise RequestError(422, f"unknown key '{extra[0]}' in the request; put inputs under \"inputs\"")
        return body["inputs"]
    if ctype not in ("multipart/form-data", "application/x-www-form-urlencoded"):
        raise RequestError(415, f"unsupported content type '{ctype or 'none'}': send multipart/form-data "
                                "or application/json")
    try:
        form = await request.form(max_files=len(svc.columns) + 1, max_fields=len(svc.columns) + 1)
    except RequestError:  # the body limit
        raise
    except Exception as e:  # malformed multipart (starlette raises HTTPException or parser errors)
        raise RequestError(400, f"cannot read the multipart form: {getattr(e, 'detail', e)}") from None
    fields = {}
    for k, v in form.multi_items():
        if isinstance(v, UploadFile):
            if not v.filename and not v.size:  # a form's file input left empty: the input is absent
                continue
            if svc.columns.get(k) not in FILE_ROLES:
                raise RequestError(422, f"field '{k}': a file was sent, but '{k}' is not an image or "
                                        "audio input" if k in svc.columns else f"unknown field '{k}'; "
                                        f"the inputs are: {', '.join(svc.columns)}")
            fields[k] = await v.read()
        else:
            if svc.columns.get(k) in FILE_ROLES:
                raise RequestError(422, f"field '{k}': send the file itself as an upload "
                                        "(file paths are not accepted)")
            fields[k] = v
    return fields


async def request_items(request, max_items: int) -> list:
    """The items of one /predict/batch request: JSON {"items": [...]}."""
    ctype = _content_type(request)
    if ctype != "application/json":
        raise RequestError(415, f"unsupported content type '{ctype or 'none'}': /predict/batch takes "
                                'application/json {"items": [...]}')
    body = await _json_body(request)
    if not isinstance(body, dict) or not isinstance(body.get("items"), list) or not body["items"]:
        raise RequestError(422, 'expected a JSON object {"items": [{field: value, ...}, ...]} with one or '
                                "more items")
    if len(body["items"]) > max_items:
        raise RequestError(413, f"{len(body['items'])} items; the limit is {max_items} per request")
    return body["items"]


def openapi_bodies(svc: Service, opt: ServeOptions) -> tuple[dict, dict]:
    """The request bodies of /predict and /predict/batch for the OpenAPI schema (they are read by
    hand, so FastAPI cannot describe them itself)."""
    file_schema = {"type": "string", "format": "binary"}
    date_schema = {"type": "string", "description": "a date or time stamp, e.g. 2024-06-10 or 2024-06-10T14:30"}
    vector_text = {"type": "string", "description": "a list of numbers, e.g. [0.1, 0.2, 0.3]"}
    props = {c: (file_schema if r in FILE_ROLES else date_schema if r == "datetime" else vector_text if r == "vector"
                 else {"type": "number" if r == "numeric" else "string"}) for c, r in svc.columns.items()}
    json_props = {c: ({"type": "string", "format": "byte"} if r in FILE_ROLES else
                      {"type": "array", "items": {"type": "number"}} if r == "vector" else s)
                  for (c, r), s in zip(svc.columns.items(), props.values())}
    one_body = {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "properties": props}},
        "application/json": {"schema": {"type": "object", "required": ["inputs"], "properties": {
            "inputs": {"type": "object", "properties": json_props, "additionalProperties": False}}}}}}}
    batch_body = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "required": ["items"], "properties": {
            "items": {"type": "array", "maxItems": opt.max_batch_items,
                      "items": {"type": "object", "properties": json_props, "additionalProperties": False}}}}}}}}
    return one_body, batch_body


def create_app(run: Union[str, Path, Predictor], backend: str = "torch", options: Optional[ServeOptions] = None,
               threads: int = 0, gallery: Optional[Union[str, Path]] = None, device: str = "auto"):
    """The FastAPI app for one run directory (or a loaded Predictor); `gallery`: a manifest whose
    rows /search looks through (a model with a matching task); `device`: auto, cpu, cuda[:N]."""
    opt = options or ServeOptions()
    pred = run if isinstance(run, Predictor) else Predictor.load(run, device=device, backend=backend, threads=threads)
    svc = Service(pred, opt, backend)
    if gallery is not None:
        svc.gallery = Gallery.build(pred, gallery)
    batcher = MicroBatcher(svc.process, opt.max_batch, opt.max_wait_ms / 1000)
    meta = svc.metadata()

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        yield
        await batcher.stop()

    app = App(title=f"mmfit: {pred.run_dir.name}", version=meta["versions"].get("mmfit") or "0",
              description="Multimodal prediction. Files go as multipart uploads or base64 in JSON; any "
                          "input may be left out. `?explain=true` adds each modality's share.",
              lifespan=lifespan)
    app.state.service, app.state.batcher, app.state.device = svc, batcher, svc.device()
    app.add_middleware(BodyLimit, max_bytes=int(opt.max_body_mb * 1024 * 1024))

    @app.exception_handler(RequestError)
    async def request_error(request, exc: RequestError):
        return JSONResponse({"detail": exc.message}, exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, exc):
        errs = exc.errors()
        msg = "; ".join(f"{'.'.join(map(str, e.get('loc', [])))}: {e.get('msg')}" for e in errs[:5])
        return JSONResponse({"detail": msg or "invalid request"}, 422)

    budget = Budget(int(opt.max_inflight_mb * 2**20), opt.inflight_wait_s)
    app.state.budget = budget

    async def run_batch(request: Request, records: list[Record], explain: bool) -> list[dict]:
        async with budget.hold(sum(r.cost for r in records)):
            return await answer(request, batcher.submit(records, explain), opt.timeout_s)

    one_body, batch_body = openapi_bodies(svc, opt)

    @app.post("/predict", openapi_extra=one_body, summary="Predict one example")
    async def predict(request: Request, explain: bool = False):
        rec = await run_in_threadpool(svc.record, await request_fields(request, svc))
        result = (await run_batch(request, [rec], explain))[0]
        if "error" in result:
            raise RequestError(422, result["error"])
        return result

    @app.post("/predict/batch", openapi_extra=batch_body, summary="Predict many examples (JSON)")
    async def predict_batch(request: Request, explain: bool = False):
        items = await request_items(request, opt.max_batch_items)
        results, records, where = await run_in_threadpool(svc.records, items)  # one trip for every item
        if records:
            for i, r in zip(where, await run_batch(request, records, explain)):
                results[i] = r
        n_bad = sum("error" in r for r in results)
        if n_bad == len(items):
            raise RequestError(422, f"every item is invalid; item 0: {results[0]['error']}")
        return {"predictions": results, "errors": n_bad}

    @app.post("/embed", openapi_extra=one_body, summary="A record's vectors in a matching task's shared space")
    async def embed(request: Request):
        rec = await run_in_threadpool(svc.record, await request_fields(request, svc))
        async with budget.hold(rec.cost):
            return {"embeddings": await run_in_threadpool(svc.embed, rec)}

    @app.post("/search", openapi_extra=one_body, summary="The gallery rows that best match one side of a pair")
    async def search(request: Request, k: int = 10):
        if not 1 <= k <= 1000:
            raise RequestError(422, f"k must be in 1..1000, got {k}")
        rec = await run_in_threadpool(svc.record, await request_fields(request, svc))
        async with budget.hold(rec.cost):
            return await run_in_threadpool(svc.search, rec, k)

    @app.get("/health", summary="Liveness and counters")
    async def health():
        return {"status": "ok", "run": pred.run_dir.name, "backend": backend, "queued": batcher.queue.qsize(),
                "batches": batcher.batches, "rows": batcher.rows, "cancelled": batcher.cancelled,
                "inflight_mb": round(budget.used / 2**20, 1)}

    @app.get("/metadata", summary="Inputs, labels, model and versions")
    async def get_metadata():
        return meta

    page = files("mmfit.deploy").joinpath("web/index.html").read_text()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index():
        return page

    return app
