# OpenSSL libcrypto's one-shot SHA-256 for the compiled modules that hash in C buffers (merkle_native, ocsf_writer;
# each links -lcrypto, see setup.py). SHA256_Init/Update/Final hash with the same SHA-NI/AVX2 code as EVP, without
# EVP's per-call provider dispatch (measured 1.5-2x slower on 33- and 65-byte inputs, OpenSSL 3.0): deprecated
# there, still shipped, hence the suppression.

cdef extern from *:
    """
    #define OPENSSL_SUPPRESS_DEPRECATED 1
    #include <openssl/sha.h>
    """
    ctypedef struct SHA256_CTX:
        pass
    int SHA256_Init(SHA256_CTX* c) nogil
    int SHA256_Update(SHA256_CTX* c, const void* data, size_t length) nogil
    int SHA256_Final(unsigned char* md, SHA256_CTX* c) nogil
