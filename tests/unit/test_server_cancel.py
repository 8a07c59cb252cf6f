"""A cancelled request leaves its batch: the batcher tells `process` which items still have a
caller, the server's service skips the gone rows' model pass, and a request whose client
disconnects (or whose time is up) cancels its job."""

import asyncio
import threading

import numpy as np
import pytest

pytest.importorskip("fastapi")

from mmfit.data.batch import TensorData  # noqa: E402
from mmfit.data.errors import RowError  # noqa: E402
from mmfit.deploy.batching import MicroBatcher  # noqa: E402
from mmfit.deploy.server import RequestError, Service, answer  # noqa: E402


def test_a_request_cancelled_while_its_batch_runs_is_reported_gone():
    started, release = threading.Event(), threading.Event()
    seen = []

    def process(items, explain, alive):
        started.set()
        release.wait(5)
        seen.append(alive())
        return [{"done": x} for x in items]

    async def scenario():
        b = MicroBatcher(process, max_batch=8, max_wait_s=0.05)
        b.start()
        a = asyncio.ensure_future(b.submit(["a1", "a2"]))
        c = asyncio.ensure_future(b.submit(["c"]))
        await asyncio.get_running_loop().run_in_executor(None, started.wait, 5)
        a.cancel()  # its client left while the batch runs
        await asyncio.sleep(0.01)
        release.set()
        assert await c == [{"done": "c"}]
        with pytest.raises(asyncio.CancelledError):
            await a
        await b.stop()
        return b

    b = asyncio.run(scenario())
    assert seen == [[False, False, True]]
    assert (b.batches, b.rows, b.cancelled) == (1, 3, 2)


class _Pred:
    """prepare: one row per record, a record {'x': 'bad'} refused; infer records what it was given."""

    def __init__(self, on_prepare=lambda: None):
        self.on_prepare, self.inferred = on_prepare, []

    def prepare(self, records):
        self.on_prepare()
        ok = [i for i, r in enumerate(records) if r["x"] != "bad"]
        errors = [RowError(i, "x", "not a number") for i, r in enumerate(records) if r["x"] == "bad"]
        v = np.array([[float(records[i]["x"])] for i in ok], np.float32).reshape(-1, 1)
        data = TensorData({"x": {"v": v}}, {"x": np.ones(len(ok), bool)}, {}, {}, np.arange(len(ok)))
        return data, errors

    def infer(self, data, explain):
        got = [float(x) for x in data.inputs["x"]["v"][:, 0]]
        self.inferred.append(got)
        return [{"y": x} for x in got]


def _service(pred):
    svc = object.__new__(Service)
    svc.pred = pred
    return svc


def test_gone_records_are_not_decoded_nor_run_through_the_model():
    flags = [[True, False, True, True, True], [True, False, True, False, True]]  # item 3 leaves mid-batch
    svc = _service(_Pred())
    out = svc.process([{"x": "1"}, {"x": "2"}, {"x": "bad"}, {"x": "4"}, {"x": "5"}], False,
                      lambda: flags.pop(0) if len(flags) > 1 else flags[0])
    assert svc.pred.inferred == [[1.0, 5.0]]
    assert out[0] == {"y": 1.0} and out[4] == {"y": 5.0}
    assert out[1] == out[3] == {"error": "the request was cancelled"}
    assert out[2] == {"error": "field 'x': not a number"}
    everyone = _service(_Pred())  # without a batcher's flags: every record is served
    assert everyone.process([{"x": "3"}, {"x": "bad"}], False) == [{"y": 3.0}, {"error": "field 'x': not a number"}]


class _Request:
    def __init__(self, gone_after: int):
        self.calls, self.gone_after = 0, gone_after

    async def is_disconnected(self):
        self.calls += 1
        return self.calls > self.gone_after


def test_a_disconnected_client_or_the_deadline_cancels_the_job():
    async def scenario(request, timeout_s):
        cancelled = asyncio.Event()

        async def work():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                cancelled.set()
                raise

        with pytest.raises(RequestError) as e:
            await answer(request, work(), timeout_s, poll_s=0.01)
        await asyncio.sleep(0)
        return e.value.status, cancelled.is_set()

    assert asyncio.run(scenario(_Request(gone_after=2), 5.0)) == (499, True)
    assert asyncio.run(scenario(_Request(gone_after=10**6), 0.05)) == (504, True)

    async def quick():
        async def work():
            return "ok"
        return await answer(_Request(gone_after=0), work(), 1.0)

    assert asyncio.run(quick()) == "ok"  # a finished job is answered even if the client is gone


def test_a_real_disconnect_is_heard_through_starlette():
    """The disconnect is what uvicorn and Starlette report: a client that closes its socket while
    its request waits cancels the work within a few polls."""
    import socket
    import time

    uvicorn = pytest.importorskip("uvicorn")
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    seen = {}
    app = FastAPI()

    @app.exception_handler(RequestError)
    async def request_error(request, exc):
        seen["status"] = exc.status
        return JSONResponse({"detail": exc.message}, exc.status)

    @app.post("/slow")
    async def slow(request: Request):
        await request.body()

        async def work():
            try:
                await asyncio.sleep(20)
            except asyncio.CancelledError:
                seen["cancelled"] = time.monotonic()
                raise

        return await answer(request, work(), 30.0, poll_s=0.02)

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if server.started:
                break
            time.sleep(0.02)
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"POST /slow HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
        time.sleep(0.2)
        left = time.monotonic()
        s.close()
        for _ in range(100):
            if "cancelled" in seen:
                break
            time.sleep(0.02)
    finally:
        server.should_exit = True
        thread.join(5)
    assert seen.get("status") == 499 and seen["cancelled"] - left < 1.0
