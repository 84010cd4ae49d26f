"""Memory bounded by the response (issue 10, item 4): a backend's ``max_response`` caps what one
response may hold, enforced while reading and while decompressing, against real loopback servers
that send gzip bombs, oversized replies and endless streams."""
from __future__ import annotations

import asyncio
import gzip
import json
import zlib

import pytest
from aiohttp import web

from muxlang import ir
from muxlang.runtime.backends import RetryPolicy
from muxlang.runtime.executor import Runtime
from muxlang.samples import Sample, SampleFailure

MESSAGES = [{"role": "user", "content": "Question: 2+2"}]
FAST = RetryPolicy(base=0.01, cap=0.05)
HEAD = b'{"choices":[{"index":0,"message":{"role":"assistant","content":"'
TAIL = b'"}}]}'


def reply(text: str) -> bytes:
    return json.dumps({"choices": [{"index": 0, "message": {"role": "assistant",
                                                           "content": text}}]}).encode()


def gzip_bomb(inflated: int) -> bytes:
    """A valid chat completion whose text is ``inflated`` bytes of 'a', gzipped (~1000:1)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    parts = [packer.compress(HEAD)]
    block = b"a" * (1 << 20)
    for _ in range(inflated >> 20):
        parts.append(packer.compress(block))
    parts += [packer.compress(TAIL), packer.flush()]
    return b"".join(parts)


def serve_and_draw(handler, max_response: int = 1_000_000, retries: int = 2,
                   timeout: float = 60.0):
    """Serve ``handler`` on loopback and draw one sample from it: (result, requests seen)."""
    seen = []

    async def counted(request: web.Request) -> web.StreamResponse:
        seen.append(await request.read())
        return await handler(request)

    async def go():
        app = web.Application()
        app.router.add_post("/v1/chat/completions", counted)
        runner = web.AppRunner(app, handler_cancellation=True)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        backend = ir.Backend(name="local", kind="openai", url=f"http://127.0.0.1:{port}/v1",
                             retries=retries, timeout=timeout, max_response=max_response)
        model = ir.Model(name="m", backend=backend, id="id-m", seed=1)
        try:
            async with Runtime([backend], policy=FAST) as runtime:
                (result,) = await runtime.sample(model, MESSAGES, [0])
        finally:
            await runner.cleanup()
        return result

    return asyncio.run(go()), len(seen)


def test_a_gzip_bomb_is_refused_while_it_inflates_and_not_retried():
    bomb = gzip_bomb(64 << 20)  # 64 MiB of text in about 64 KB

    async def handler(request):
        return web.Response(body=bomb, headers={"Content-Encoding": "gzip",
                                                "Content-Type": "application/json"})

    result, requests = serve_and_draw(handler, max_response=1_000_000)
    assert isinstance(result, SampleFailure)
    assert "response too large" in result.error and "max_response of 1000000" in result.error
    assert "decompressed" in result.error
    assert requests == 1  # the same request would draw the same flood: not retried


def test_a_reply_past_the_cap_is_refused_by_its_declared_length():
    big = reply("x" * 50_000_000)  # a 50 MB reply

    async def handler(request):
        return web.Response(body=big, content_type="application/json")

    result, requests = serve_and_draw(handler, max_response=8_000_000)
    assert isinstance(result, SampleFailure) and "response too large" in result.error
    assert "50000" in result.error and requests == 1


def test_an_endless_stream_stops_at_the_cap_not_at_the_timeout():
    async def handler(request):
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(HEAD)
        while True:  # never ends; the client must hang up
            await response.write(b"a" * 65536)
            await asyncio.sleep(0)

    result, _ = serve_and_draw(handler, max_response=2_000_000, timeout=60.0, retries=0)
    assert isinstance(result, SampleFailure)
    assert "response too large" in result.error and "timeout" not in result.error


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "identity"])
def test_a_compressed_reply_within_the_cap_is_read(encoding):
    body = reply("Let me see.\n#### 4")
    packed = {"gzip": gzip.compress(body), "deflate": zlib.compress(body),
              "identity": body}[encoding]

    async def handler(request):
        return web.Response(body=packed, headers={"Content-Encoding": encoding,
                                                  "Content-Type": "application/json"})

    result, _ = serve_and_draw(handler)
    assert isinstance(result, Sample) and result.text == "Let me see.\n#### 4"


def test_a_reply_of_exactly_the_cap_is_read_and_one_byte_more_is_not():
    body = reply("")
    cap = len(body) + 2000

    for size, ok in ((cap, True), (cap + 1, False)):
        text = reply("y" * (size - len(body)))
        assert len(text) == size

        async def handler(request, text=text):
            return web.Response(body=gzip.compress(text), headers={
                "Content-Encoding": "gzip", "Content-Type": "application/json"})

        result, _ = serve_and_draw(handler, max_response=cap)
        assert isinstance(result, Sample) is ok, result


def test_an_encoding_that_was_not_asked_for_is_a_clear_error():
    async def handler(request):
        assert request.headers["Accept-Encoding"] == "gzip, deflate"
        return web.Response(body=b"\x00\x01", headers={"Content-Encoding": "br",
                                                       "Content-Type": "application/json"})

    result, _ = serve_and_draw(handler, retries=0)
    assert isinstance(result, SampleFailure)
    assert "Content-Encoding 'br', which was not asked for" in result.error
