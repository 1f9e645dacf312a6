from typing import Protocol

FRAME_NONE: int
FRAME_LENGTH: int
FRAME_CHUNKED: int
FRAME_CLOSE: int

def chunk_size_line(n: int) -> bytes: ...

class RequestHead:
    method: bytes
    target: bytes
    http_minor: int
    keep_alive: bool
    upgrade: bytes | None
    content_length: int          # -1: none
    chunked: bool
    expect_continue: bool
    host: bytes | None
    cookies: list[bytes]
    headers: list[tuple[bytes, bytes, bytes]]   # (lower-case name, name, value)
    @property
    def has_body(self) -> bool: ...
    def header(self, lname: bytes) -> bytes | None: ...
    def serialize(self, extra: bytes = ...) -> bytes: ...

class ResponseHead:
    status: int
    reason: bytes
    http_minor: int
    keep_alive: bool
    upgrade: bytes | None
    content_length: int
    chunked: bool
    headers: list[tuple[bytes, bytes, bytes]]
    framing: int
    closes: bool
    def header(self, lname: bytes) -> bytes | None: ...
    def serialize(self, client_keep_alive: bool, client_http11: bool, head_request: bool,
                  extra: bytes = ...) -> bytes: ...

class RequestSink(Protocol):
    def request_head(self, head: RequestHead) -> None: ...
    def request_body(self, data: bytes) -> None: ...
    def request_end(self) -> None: ...
    def request_upgrade(self, rest: bytes) -> None: ...

class ResponseSink(Protocol):
    def response_head(self, head: ResponseHead) -> None: ...
    def response_body(self, data: bytes) -> None: ...
    def response_end(self) -> None: ...
    def response_upgrade(self, rest: bytes) -> None: ...

class RequestReader:
    messages: int
    def __init__(self, sink: RequestSink, max_request_line: int = ..., max_header_bytes: int = ...,
                 max_headers: int = ...) -> None: ...
    @property
    def idle(self) -> bool: ...
    def feed(self, data: bytes) -> None: ...

class ResponseReader:
    head_request: bool
    def __init__(self, sink: ResponseSink, max_header_bytes: int = ..., max_headers: int = ...) -> None: ...
    @property
    def idle(self) -> bool: ...
    def feed(self, data: bytes) -> None: ...
