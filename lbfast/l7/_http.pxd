cdef class RequestHead:
    cdef public bytes method
    cdef public bytes target
    cdef public int http_minor
    cdef public bint keep_alive
    cdef public bytes upgrade
    cdef public long long content_length
    cdef public bint chunked
    cdef public bint expect_continue
    cdef public bytes host
    cdef public list cookies
    cdef public list headers
    cdef set strip


cdef class ResponseHead:
    cdef public int status
    cdef public bytes reason
    cdef public int http_minor
    cdef public bint keep_alive
    cdef public bytes upgrade
    cdef public long long content_length
    cdef public bint chunked
    cdef public list headers
    cdef public int framing
    cdef public bint closes
    cdef set strip


cdef class RequestReader:
    cdef object parser
    cdef object _on_head, _on_body, _on_end, _on_upgrade
    cdef RequestHead head
    cdef list url
    cdef Py_ssize_t url_len, header_bytes, head_bytes, nheaders
    cdef Py_ssize_t max_line, max_header_bytes, max_headers
    cdef bint in_head, in_body
    cdef int n_host
    cdef public int messages


cdef class ResponseReader:
    cdef object parser
    cdef object sink
    cdef object _on_head, _on_body, _on_end, _on_upgrade
    cdef ResponseHead head
    cdef Py_ssize_t header_bytes, head_bytes, nheaders
    cdef Py_ssize_t max_header_bytes, max_headers
    cdef bint in_head, in_body
    cdef public bint head_request
