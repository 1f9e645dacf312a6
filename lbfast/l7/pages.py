"""The responses the proxy writes itself: error pages, each closing the connection."""
from http import HTTPStatus

_cache: dict[int, bytes] = {}


def error_page(status: int) -> bytes:
    page = _cache.get(status)
    if page is None:
        phrase = HTTPStatus(status).phrase
        body = (f"<html><body><h1>{status} {phrase}</h1>\n"
                f"<p>{_EXPLAIN.get(status, phrase)}</p></body></html>\n").encode()
        page = (f"HTTP/1.1 {status} {phrase}\r\nContent-Type: text/html\r\n"
                f"Content-Length: {len(body)}\r\nCache-Control: no-cache\r\n"
                f"Connection: close\r\n\r\n").encode() + body
        _cache[status] = page
    return page


_EXPLAIN = {
    400: "Your browser sent an invalid request.",
    408: "Your browser didn't send a complete request in time.",
    502: "The server returned an invalid or incomplete response.",
    503: "No server is available to handle this request.",
    504: "The server didn't respond in time.",
}
