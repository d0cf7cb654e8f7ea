from __future__ import annotations

import anyio
import pytest

from examples import hello


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_the_hello_demo_delivers_every_order_in_order() -> None:
    with anyio.fail_after(10):
        handled = await hello.main(orders=7)
    assert handled == [f"order {n} via counter->kitchen" for n in range(1, 8)]
