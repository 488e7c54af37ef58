/*  proto_keys - CURVE key files: making them, reading them, refusing bad ones.

    A Parley key is a czmq certificate pair (zcert): NAME.key holds the
    public key and metadata ("name", "created") and may be copied anywhere;
    NAME.key_secret holds the secret key as well and never leaves the
    machine of the process it belongs to (mode 0600).

    Keys are text (Z85, 40 characters). Nothing here prints or returns a
    secret key in an error message; only public keys (or their first 8
    characters) ever reach a log line.
*/
#ifndef PROTO_KEYS_H_INCLUDED
#define PROTO_KEYS_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

//  Z85 text of a 32-byte key, plus its terminating NUL.
#define PROTO_KEY_TXT 41

//  Makes a new key pair NAME in `dir` (created if missing, mode 0700):
//  dir/NAME.key (public, 0644) and dir/NAME.key_secret (secret, 0600).
//  NAME is letters, digits, '.', '_' and '-' (64 at most, no leading '.'
//  or '-'). An existing file is kept (-1) unless `force`. On success fills
//  `public_txt` and the two paths (each `pathlen` bytes) and returns 0;
//  otherwise -1 and `why`.
int proto_keys_generate (const char *dir, const char *name, bool force,
                         char public_txt[PROTO_KEY_TXT], char *public_path,
                         char *secret_path, size_t pathlen, char *why, size_t whylen);

//  Reads this process's own certificate: the secret file (NAME.key_secret,
//  or NAME.key when NAME.key_secret lies beside it). Checks that it holds a
//  secret key that belongs to its public key and that it is not an example
//  key from ZeroMQ's documentation. Warns when the secret file can be read
//  by other users. Returns 0 or -1 with `why`.
int proto_keys_load_own (const char *path, char public_txt[PROTO_KEY_TXT],
                         char secret_txt[PROTO_KEY_TXT], char *why, size_t whylen);

//  Reads a peer's public certificate (a server key a client pins). A path
//  naming a secret file is refused: secret keys are not copied to peers.
//  Returns 0 or -1 with `why`.
int proto_keys_load_public (const char *path, char public_txt[PROTO_KEY_TXT], char *why,
                            size_t whylen);

//  True when `public_txt` is one of the example key pairs printed in
//  ZeroMQ's documentation (zmq_curve(7), the CurveZMQ test vectors):
//  everyone has their secret keys, so they must never be trusted.
bool proto_keys_published (const char *public_txt);

#endif
