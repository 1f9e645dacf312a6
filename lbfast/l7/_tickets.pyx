# cython: language_level=3
"""TLS session-ticket keys of one process, with rotation: tickets are issued under the
current key, and a ticket under the previous key still resumes (and is renewed under the
current one). OpenSSL calls `ticket_key` for every ticket it issues or reads; the
ssl module has no API for it, so `install` takes the SSL_CTX pointer.

A key is 80 bytes: name 16, HMAC-SHA256 secret 32, AES-256-CBC key 32."""
from libc.string cimport memcmp, memcpy

cdef extern from "openssl/core.h":
    ctypedef struct OSSL_PARAM:
        const char *key
        unsigned int data_type
        void *data
        size_t data_size
        size_t return_size

cdef extern from "openssl/params.h":
    OSSL_PARAM OSSL_PARAM_construct_octet_string(const char *key, void *buf, size_t bsize) nogil
    OSSL_PARAM OSSL_PARAM_construct_utf8_string(const char *key, char *buf, size_t bsize) nogil
    OSSL_PARAM OSSL_PARAM_construct_end() nogil

cdef extern from "openssl/evp.h":
    ctypedef struct EVP_CIPHER_CTX:
        pass
    ctypedef struct EVP_CIPHER:
        pass
    ctypedef struct EVP_MAC_CTX:
        pass
    ctypedef struct ENGINE:
        pass
    const EVP_CIPHER *EVP_aes_256_cbc() nogil
    int EVP_EncryptInit_ex(EVP_CIPHER_CTX *ctx, const EVP_CIPHER *cipher, ENGINE *impl,
                           const unsigned char *key, const unsigned char *iv) nogil
    int EVP_DecryptInit_ex(EVP_CIPHER_CTX *ctx, const EVP_CIPHER *cipher, ENGINE *impl,
                           const unsigned char *key, const unsigned char *iv) nogil
    int EVP_MAC_CTX_set_params(EVP_MAC_CTX *ctx, const OSSL_PARAM *params) nogil

cdef extern from "openssl/rand.h":
    int RAND_bytes(unsigned char *buf, int num) nogil

cdef extern from "openssl/ssl.h":
    ctypedef struct SSL:
        pass
    ctypedef struct SSL_CTX:
        pass
    ctypedef int (*ticket_key_cb)(SSL *, unsigned char *, unsigned char *, EVP_CIPHER_CTX *,
                                  EVP_MAC_CTX *, int) noexcept nogil
    int SSL_CTX_set_tlsext_ticket_key_evp_cb(SSL_CTX *ctx, ticket_key_cb cb)

DEF KEY_LEN = 80
DEF NAME_LEN = 16
DEF IV_LEN = 16

KEY_BYTES = KEY_LEN

cdef unsigned char keys[2][KEY_LEN]     # [0] current, [1] previous
cdef int nkeys = 0


cdef int ticket_key(SSL *ssl, unsigned char *key_name, unsigned char *iv, EVP_CIPHER_CTX *cipher,
                    EVP_MAC_CTX *mac, int encrypt) noexcept nogil:
    """OpenSSL's contract: 1 ok, 2 ok but renew the ticket, 0 unknown key (full
    handshake), -1 error."""
    cdef int i = -1, j
    cdef OSSL_PARAM params[3]
    if nkeys == 0:
        return 0 if not encrypt else -1
    if encrypt:
        if RAND_bytes(iv, IV_LEN) != 1:
            return -1
        memcpy(key_name, keys[0], NAME_LEN)
        i = 0
    else:
        for j in range(nkeys):
            if memcmp(key_name, keys[j], NAME_LEN) == 0:
                i = j
                break
        if i < 0:
            return 0
    params[0] = OSSL_PARAM_construct_octet_string("key", keys[i] + NAME_LEN, 32)
    params[1] = OSSL_PARAM_construct_utf8_string("digest", <char *>"SHA256", 0)
    params[2] = OSSL_PARAM_construct_end()
    if EVP_MAC_CTX_set_params(mac, params) != 1:
        return -1
    if encrypt:
        return 1 if EVP_EncryptInit_ex(cipher, EVP_aes_256_cbc(), NULL, keys[0] + 48, iv) == 1 else -1
    if EVP_DecryptInit_ex(cipher, EVP_aes_256_cbc(), NULL, keys[i] + 48, iv) != 1:
        return -1
    return 2 if i > 0 else 1


def rotate(bytes key):
    """`key` becomes current; the current one stays accepted as the previous."""
    global nkeys
    if len(key) != KEY_LEN:
        raise ValueError(f"a ticket key is {KEY_LEN} bytes")
    if nkeys:
        memcpy(keys[1], keys[0], KEY_LEN)
    memcpy(keys[0], <const unsigned char *>key, KEY_LEN)
    nkeys = 2 if nkeys else 1


def install(size_t ssl_ctx):
    """Have the SSL_CTX at this address issue and read tickets with this process's keys."""
    if not ssl_ctx:
        raise ValueError("no SSL_CTX")
    if SSL_CTX_set_tlsext_ticket_key_evp_cb(<SSL_CTX *>ssl_ctx, ticket_key) != 1:
        raise ValueError("OpenSSL refused the ticket key callback")
