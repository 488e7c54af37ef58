/*  pfile - reads and writes that finish.

    write(2) and pread(2) may do part of the work or be interrupted by a
    signal; every caller that needs all of it (the journals, the jsonl
    destination) loops the same way, here. */
#ifndef PFILE_H_INCLUDED
#define PFILE_H_INCLUDED

#include <stddef.h>
#include <stdint.h>

//  Writes all `len` bytes: at `offset` (pwrite), or, when offset is
//  PFILE_APPEND, where the descriptor stands (write). Returns 0, or -1 with
//  errno set (EIO when the system wrote nothing and said no error). `done`,
//  if given, gets the bytes written, also on failure.
#define PFILE_APPEND UINT64_MAX
int pfile_write_all (int fd, const void *data, size_t len, uint64_t offset, size_t *done);

//  Reads all `len` bytes at `offset`. Returns 0, or -1 with errno set (EIO
//  when the file ends first: it shrank under the reader).
int pfile_read_all (int fd, void *data, size_t len, uint64_t offset);

#endif
