/*
 * dl_archive.c — the libarchive functions Sluice calls (`seed` reads tar
 * files, `export` writes them), loaded from libarchive.so.13 at the first call
 * rather than linked (see dl_libs.h for why and how).
 *
 * Each function below has libarchive's own name and signature and forwards to
 * the pointer dl_lib_ready() resolved. If libarchive could not be loaded,
 * archive_read_new(), archive_write_new() and archive_entry_new() return NULL
 * (the caller reports dl_archive_error()), the other functions return
 * ARCHIVE_FATAL or nothing, and the free functions do nothing, as they do
 * with NULL.
 */
#include <archive.h>
#include <archive_entry.h>

#include "dl_libs.h"

#ifndef SLUICE_LIBARCHIVE_SONAME
#define SLUICE_LIBARCHIVE_SONAME "libarchive.so.13"
#endif

#define ARCHIVE_SYMS(X)                                                                            \
    X(archive_error_string)                                                                        \
    X(archive_filter_bytes)                                                                        \
    X(archive_read_new)                                                                            \
    X(archive_read_support_filter_all)                                                             \
    X(archive_read_support_format_tar)                                                             \
    X(archive_read_open_filename)                                                                  \
    X(archive_read_next_header)                                                                    \
    X(archive_read_data)                                                                           \
    X(archive_read_free)                                                                           \
    X(archive_write_new)                                                                           \
    X(archive_write_set_format_pax_restricted)                                                     \
    X(archive_write_add_filter_zstd)                                                               \
    X(archive_write_open_fd)                                                                       \
    X(archive_write_header)                                                                        \
    X(archive_write_data)                                                                          \
    X(archive_write_close)                                                                         \
    X(archive_write_free)                                                                          \
    X(archive_entry_new)                                                                           \
    X(archive_entry_free)                                                                          \
    X(archive_entry_pathname)                                                                      \
    X(archive_entry_filetype)                                                                      \
    X(archive_entry_size)                                                                          \
    X(archive_entry_size_is_set)                                                                   \
    X(archive_entry_set_pathname)                                                                  \
    X(archive_entry_set_filetype)                                                                  \
    X(archive_entry_set_perm)                                                                      \
    X(archive_entry_set_size)                                                                      \
    X(archive_entry_set_mtime)

DL_SHIM(ARCHIVE_SYMS, "libarchive", SLUICE_LIBARCHIVE_SONAME, dl_archive_error)

/* ---- any archive ---- */

const char *archive_error_string(struct archive *a)
{
    return ready() ? fn.archive_error_string(a) : dl_archive_error("libarchive is not loaded");
}

la_int64_t archive_filter_bytes(struct archive *a, int n)
{
    return ready() ? fn.archive_filter_bytes(a, n) : -1;
}

/* ---- reading ---- */

struct archive *archive_read_new(void)
{
    return ready() ? fn.archive_read_new() : NULL;
}

int archive_read_support_filter_all(struct archive *a)
{
    return ready() ? fn.archive_read_support_filter_all(a) : ARCHIVE_FATAL;
}

int archive_read_support_format_tar(struct archive *a)
{
    return ready() ? fn.archive_read_support_format_tar(a) : ARCHIVE_FATAL;
}

int archive_read_open_filename(struct archive *a, const char *filename, size_t block_size)
{
    return ready() ? fn.archive_read_open_filename(a, filename, block_size) : ARCHIVE_FATAL;
}

int archive_read_next_header(struct archive *a, struct archive_entry **entry)
{
    return ready() ? fn.archive_read_next_header(a, entry) : ARCHIVE_FATAL;
}

la_ssize_t archive_read_data(struct archive *a, void *buf, size_t len)
{
    return ready() ? fn.archive_read_data(a, buf, len) : ARCHIVE_FATAL;
}

int archive_read_free(struct archive *a)
{
    return ready() ? fn.archive_read_free(a) : ARCHIVE_OK;
}

/* ---- writing ---- */

struct archive *archive_write_new(void)
{
    return ready() ? fn.archive_write_new() : NULL;
}

int archive_write_set_format_pax_restricted(struct archive *a)
{
    return ready() ? fn.archive_write_set_format_pax_restricted(a) : ARCHIVE_FATAL;
}

int archive_write_add_filter_zstd(struct archive *a)
{
    return ready() ? fn.archive_write_add_filter_zstd(a) : ARCHIVE_FATAL;
}

int archive_write_open_fd(struct archive *a, int fd)
{
    return ready() ? fn.archive_write_open_fd(a, fd) : ARCHIVE_FATAL;
}

int archive_write_header(struct archive *a, struct archive_entry *entry)
{
    return ready() ? fn.archive_write_header(a, entry) : ARCHIVE_FATAL;
}

la_ssize_t archive_write_data(struct archive *a, const void *buf, size_t len)
{
    return ready() ? fn.archive_write_data(a, buf, len) : ARCHIVE_FATAL;
}

int archive_write_close(struct archive *a)
{
    return ready() ? fn.archive_write_close(a) : ARCHIVE_FATAL;
}

int archive_write_free(struct archive *a)
{
    return ready() ? fn.archive_write_free(a) : ARCHIVE_OK;
}

/* ---- entries ---- */

struct archive_entry *archive_entry_new(void)
{
    return ready() ? fn.archive_entry_new() : NULL;
}

void archive_entry_free(struct archive_entry *e)
{
    if (ready())
        fn.archive_entry_free(e);
}

const char *archive_entry_pathname(struct archive_entry *e)
{
    return ready() ? fn.archive_entry_pathname(e) : NULL;
}

__LA_MODE_T archive_entry_filetype(struct archive_entry *e)
{
    return ready() ? fn.archive_entry_filetype(e) : 0;
}

la_int64_t archive_entry_size(struct archive_entry *e)
{
    return ready() ? fn.archive_entry_size(e) : 0;
}

int archive_entry_size_is_set(struct archive_entry *e)
{
    return ready() ? fn.archive_entry_size_is_set(e) : 0;
}

void archive_entry_set_pathname(struct archive_entry *e, const char *name)
{
    if (ready())
        fn.archive_entry_set_pathname(e, name);
}

void archive_entry_set_filetype(struct archive_entry *e, unsigned int type)
{
    if (ready())
        fn.archive_entry_set_filetype(e, type);
}

void archive_entry_set_perm(struct archive_entry *e, __LA_MODE_T perm)
{
    if (ready())
        fn.archive_entry_set_perm(e, perm);
}

void archive_entry_set_size(struct archive_entry *e, la_int64_t size)
{
    if (ready())
        fn.archive_entry_set_size(e, size);
}

void archive_entry_set_mtime(struct archive_entry *e, time_t sec, long nsec)
{
    if (ready())
        fn.archive_entry_set_mtime(e, sec, nsec);
}
