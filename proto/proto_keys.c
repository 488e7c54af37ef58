/*  proto_keys - CURVE key files. See proto_keys.h. */
#include "proto/proto_keys.h"
#include "common/plog.h"

#include <czmq.h>
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

//  The example keys of zmq_curve(7) ("TEST KEY VALUES"), which are also the
//  test vectors of the CurveZMQ specification: client and server public keys.
static const char *s_published[] = {
    "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID",
    "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7",
    NULL,
};

//  What zcert_load gives as the secret key of a public-only file.
static const char s_no_secret[] = "0000000000000000000000000000000000000000";

bool proto_keys_published (const char *public_txt)
{
    for (const char **k = s_published; *k; k++)
        if (streq (*k, public_txt))
            return true;
    return false;
}

static bool s_name_ok (const char *name)
{
    size_t n = strlen (name);
    if (n == 0 || n > 64 || name[0] == '.' || name[0] == '-')
        return false;
    return strspn (name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == n;
}

//  mkdir -p; directories it creates are private (they will hold secrets).
static int s_make_dirs (const char *dir, char *why, size_t whylen)
{
    char path[4096];
    snprintf (path, sizeof path, "%s", dir);
    for (char *p = path + 1; ; p++) {
        if (*p == '/' || *p == 0) {
            char saved = *p;
            *p = 0;
            if (mkdir (path, 0700) && errno != EEXIST) {
                snprintf (why, whylen, "cannot create %s: %s", path, strerror (errno));
                return -1;
            }
            *p = saved;
            if (!saved)
                break;
        }
    }
    struct stat st;
    if (stat (dir, &st) || !S_ISDIR (st.st_mode)) {
        snprintf (why, whylen, "%s is not a directory", dir);
        return -1;
    }
    return 0;
}

int proto_keys_generate (const char *dir, const char *name, bool force,
                         char public_txt[PROTO_KEY_TXT], char *public_path,
                         char *secret_path, size_t pathlen, char *why, size_t whylen)
{
    if (!s_name_ok (name)) {
        snprintf (why, whylen, "\"%s\" is not a usable key name: use letters, digits, '.', '_' and"
                  " '-' (64 at most, not starting with '.' or '-')", name);
        return -1;
    }
    if (!dir || !*dir)
        dir = ".";
    if (s_make_dirs (dir, why, whylen))
        return -1;
    snprintf (public_path, pathlen, "%s/%s.key", dir, name);
    snprintf (secret_path, pathlen, "%s/%s.key_secret", dir, name);
    struct stat st;
    for (int i = 0; i < 2; i++) {
        const char *path = i ? secret_path : public_path;
        if (lstat (path, &st) == 0) {
            if (!force) {
                snprintf (why, whylen, "%s exists; --force replaces it (every peer that pinned or"
                          " allow-listed the old key must then be given the new one)", path);
                return -1;
            }
            //  Removed, not overwritten: a new file gets the new mode at once.
            if (unlink (path)) {
                snprintf (why, whylen, "cannot remove %s: %s", path, strerror (errno));
                return -1;
            }
        }
    }
    zcert_t *cert = zcert_new ();
    if (!cert) {
        snprintf (why, whylen, "cannot make a key pair (libzmq without CURVE support?)");
        return -1;
    }
    char created[32];
    time_t now = time (NULL);
    struct tm tm;
    gmtime_r (&now, &tm);
    strftime (created, sizeof created, "%Y-%m-%dT%H:%M:%SZ", &tm);
    zcert_set_meta (cert, "name", "%s", name);
    zcert_set_meta (cert, "created", "%s", created);
    //  The secret file is created private: no moment where others may read it.
    mode_t old = umask (077);
    int rc = zcert_save_secret (cert, secret_path);
    umask (old);
    if (rc == 0)
        rc = chmod (secret_path, 0600);
    if (rc == 0)
        rc = zcert_save_public (cert, public_path);
    if (rc == 0)
        rc = chmod (public_path, 0644);
    if (rc) {
        snprintf (why, whylen, "cannot write %s and %s: %s", public_path, secret_path,
                  strerror (errno));
        unlink (secret_path);
        unlink (public_path);
        zcert_destroy (&cert);
        return -1;
    }
    snprintf (public_txt, PROTO_KEY_TXT, "%s", zcert_public_txt (cert));
    zcert_destroy (&cert);
    return 0;
}

static bool s_ends_with (const char *s, const char *suffix)
{
    size_t n = strlen (s), m = strlen (suffix);
    return n >= m && streq (s + n - m, suffix);
}

//  The file that holds the secret key when `path` is loaded.
static void s_secret_file (const char *path, char *out, size_t outlen)
{
    if (s_ends_with (path, "_secret"))
        snprintf (out, outlen, "%s", path);
    else
        snprintf (out, outlen, "%s_secret", path);
}

int proto_keys_load_own (const char *path, char public_txt[PROTO_KEY_TXT],
                         char secret_txt[PROTO_KEY_TXT], char *why, size_t whylen)
{
    if (!path || !*path) {
        snprintf (why, whylen, "network.security.certificate (PARLEY_CERT) is not set: name this"
                  " process's secret key file, made with parleyctl keygen");
        return -1;
    }
    char secret_file[4096];
    s_secret_file (path, secret_file, sizeof secret_file);
    if (access (secret_file, R_OK)) {
        snprintf (why, whylen, "cannot read the certificate %s: %s", secret_file, strerror (errno));
        return -1;
    }
    //  zcert_load reads FILE_secret when it exists, else FILE itself.
    zcert_t *cert = zcert_load (path);
    if (!cert) {
        snprintf (why, whylen, "%s is not a CURVE certificate (make one with parleyctl keygen)",
                  secret_file);
        return -1;
    }
    int rc = -1;
    char derived[PROTO_KEY_TXT];
    if (streq (zcert_secret_txt (cert), s_no_secret))
        snprintf (why, whylen, "%s holds no secret key: give the NAME.key_secret file",
                  secret_file);
    else if (zmq_curve_public (derived, zcert_secret_txt (cert))
             || !streq (derived, zcert_public_txt (cert)))
        snprintf (why, whylen, "%s is damaged: its public key does not belong to its secret key",
                  secret_file);
    else if (proto_keys_published (zcert_public_txt (cert)))
        snprintf (why, whylen, "%s holds an example key printed in ZeroMQ's documentation, whose"
                  " secret everyone knows: make a key of your own with parleyctl keygen",
                  secret_file);
    else {
        snprintf (public_txt, PROTO_KEY_TXT, "%s", zcert_public_txt (cert));
        snprintf (secret_txt, PROTO_KEY_TXT, "%s", zcert_secret_txt (cert));
        rc = 0;
        struct stat st;
        if (stat (secret_file, &st) == 0 && (st.st_mode & 077))
            plog_warn ("the secret key file %s can be read by other users (mode %04o):"
                       " chmod 600 %s", secret_file, (unsigned) (st.st_mode & 07777), secret_file);
    }
    zcert_destroy (&cert);
    return rc;
}

int proto_keys_load_public (const char *path, char public_txt[PROTO_KEY_TXT], char *why,
                            size_t whylen)
{
    if (s_ends_with (path, "_secret")) {
        snprintf (why, whylen, "%s is a secret key file: give the public one (%.*s), and keep the"
                  " secret on its own machine", path, (int) (strlen (path) - strlen ("_secret")),
                  path);
        return -1;
    }
    if (access (path, R_OK)) {
        snprintf (why, whylen, "cannot read %s: %s", path, strerror (errno));
        return -1;
    }
    zcert_t *cert = zcert_load (path);
    if (!cert) {
        snprintf (why, whylen, "%s is not a CURVE certificate", path);
        return -1;
    }
    int rc = -1;
    if (proto_keys_published (zcert_public_txt (cert)))
        snprintf (why, whylen, "%s holds an example key printed in ZeroMQ's documentation, whose"
                  " secret everyone knows", path);
    else {
        snprintf (public_txt, PROTO_KEY_TXT, "%s", zcert_public_txt (cert));
        rc = 0;
    }
    zcert_destroy (&cert);
    return rc;
}
