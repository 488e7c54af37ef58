/*  pfile - reads and writes that finish. See pfile.h. */
#include "store/pfile.h"

#include <errno.h>
#include <sys/types.h>
#include <unistd.h>

int pfile_write_all (int fd, const void *data, size_t len, uint64_t offset, size_t *done)
{
    const char *p = data;
    size_t written = 0;
    int rc = 0;
    while (written < len) {
        ssize_t n = offset == PFILE_APPEND
                        ? write (fd, p + written, len - written)
                        : pwrite (fd, p + written, len - written, (off_t) (offset + written));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (n == 0)
                errno = EIO;
            rc = -1;
            break;
        }
        written += (size_t) n;
    }
    if (done)
        *done = written;
    return rc;
}

int pfile_read_all (int fd, void *data, size_t len, uint64_t offset)
{
    char *p = data;
    while (len) {
        ssize_t n = pread (fd, p, len, (off_t) offset);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (n == 0)
                errno = EIO;        //  the file shrank under us
            return -1;
        }
        p += n;
        len -= (size_t) n;
        offset += (uint64_t) n;
    }
    return 0;
}
