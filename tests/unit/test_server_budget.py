"""The server's in-flight budget of decoded bytes: a request over it waits for room, then 503."""

import asyncio

import pytest

pytest.importorskip("fastapi")

from mmfit.deploy.server import Budget, RequestError  # noqa: E402


def test_a_request_waits_for_room_and_gets_503_when_none_comes():
    async def scenario():
        b = Budget(10, wait_s=1.0)
        order = []

        async def first():
            async with b.hold(8):
                order.append("first in")
                await asyncio.sleep(0.1)
            order.append("first out")

        async def second():
            await asyncio.sleep(0.01)
            async with b.hold(5):
                order.append(f"second in, {b.used} used")

        await asyncio.gather(first(), second())
        assert order == ["first in", "first out", "second in, 5 used"] and b.used == 0

        b.wait_s = 0.05
        async with b.hold(8):
            with pytest.raises(RequestError) as e:
                async with b.hold(5):
                    pass
        assert e.value.status == 503 and e.value.headers == {"Retry-After": "1"} and b.used == 0
        with pytest.raises(RequestError) as e:  # more than the whole budget: never fits
            async with b.hold(11):
                pass
        assert e.value.status == 413
        async with b.hold(0):  # nothing decoded: nothing held
            assert b.used == 0

    asyncio.run(scenario())
