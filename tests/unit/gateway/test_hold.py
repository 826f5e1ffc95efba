"""The per-model hold: bounded, woken, timed out, and emptied at shutdown."""

from __future__ import annotations

import asyncio

import pytest

from pagoda.gateway.errors import GatewayError
from pagoda.gateway.hold import Hold
from pagoda.gateway.registry import Backend, Endpoint


def cold(scales_to_zero: bool = True) -> Backend:
    return Backend("ns", "m", "m", scales_to_zero=scales_to_zero)


async def test_a_held_request_goes_once_a_pod_is_ready_and_the_model_was_woken():
    woken: list[str] = []

    async def wake(b: Backend) -> None:
        woken.append(b.name)

    hold, b = Hold(2, 5.0, wake), cold()
    waiter = asyncio.create_task(hold.until_ready(b))
    await asyncio.sleep(0.05)
    assert hold.depth("m") == 1 and woken == ["m"]
    b.set_slice("s", [Endpoint("p", "10.0.0.1", 8000)])
    await asyncio.wait_for(waiter, 1)
    assert hold.depth("m") == 0


async def test_beyond_the_bound_is_429_with_retry_after():
    hold, b = Hold(1, 5.0, _no_wake), cold()
    first = asyncio.create_task(hold.until_ready(b))
    await asyncio.sleep(0.01)
    with pytest.raises(GatewayError) as e:
        await hold.until_ready(b)
    assert e.value.status == 429 and e.value.retry_after >= 1
    first.cancel()


async def test_past_the_timeout_is_503_with_retry_after():
    hold, b = Hold(4, 0.1, _no_wake), cold()
    with pytest.raises(GatewayError) as e:
        await hold.until_ready(b)
    assert e.value.status == 503 and e.value.retry_after and "starting from zero" in e.value.message
    assert hold.depth("m") == 0


async def test_shutdown_answers_every_held_request_at_once():
    hold, b = Hold(4, 60.0, _no_wake), cold()
    held = [asyncio.create_task(hold.until_ready(b)) for _ in range(3)]
    await asyncio.sleep(0.01)
    hold.close()
    results = await asyncio.wait_for(asyncio.gather(*held, return_exceptions=True), 1)
    assert all(isinstance(r, GatewayError) and r.code == "gateway_restarting" for r in results)
    with pytest.raises(GatewayError):
        await hold.until_ready(b)  # and nothing new is held


async def test_a_model_that_does_not_scale_to_zero_is_not_woken():
    async def wake(b: Backend) -> None:
        raise AssertionError("woken")

    with pytest.raises(GatewayError):
        await Hold(1, 0.05, wake).until_ready(cold(scales_to_zero=False))


async def _no_wake(b: Backend) -> None:
    return None
