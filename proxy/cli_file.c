/*
 * cli_file.c — read-only input mappings and atomic output files for the
 * command-line tools (see cli_file.h).
 *
 * How it works: inputs are mapped with mmap and populated at once (they may
 * be large, and the codecs read every byte: both check a digest of the base
 * first; one populating call costs less than a page fault per 64 KiB).
 * Outputs are written to a mkostemp file in the destination's directory
 * through a 64 KiB buffer (writes of that size or more go straight through:
 * the delta decoders hand over 256 KiB pieces), then fchmod 0644, fsync,
 * rename(2) over the destination and fsync of the directory, the sequence
 * that makes the new name point at complete, durable content after a crash
 * at any point.
 */
#include "cli_file.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define WRITE_BUF (64u << 10) /* small: a device's memory is counted in multiples of its files */

/* ---- input files ---- */

int cli_map_file(const char *cmd, const char *path, cli_mapped *m)
{
    m->path = path;
    m->p = NULL;
    m->len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "sluice %s: %s: %s\n", cmd, path, strerror(errno));
        return -1;
    }
    struct stat st;
    int rc = -1;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        fprintf(stderr, "sluice %s: %s: not a regular file\n", cmd, path);
    } else if (st.st_size == 0) {
        m->p = (const uint8_t *)"";
        rc = 0;
    } else {
        void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
        if (p == MAP_FAILED) {
            fprintf(stderr, "sluice %s: %s: mmap: %s\n", cmd, path, strerror(errno));
        } else {
            m->p = p;
            m->len = (size_t)st.st_size;
            rc = 0;
        }
    }
    close(fd);
    return rc;
}

void cli_unmap_file(cli_mapped *m)
{
    if (m->len > 0)
        munmap((void *)m->p, m->len);
    m->len = 0;
}

/* ---- atomic output ---- */

int cli_out_open(cli_out *o, const char *cmd, const char *dest)
{
    memset(o, 0, sizeof *o);
    o->cmd = cmd;
    o->dest = dest;
    o->fd = -1;
    char copy[PATH_MAX];
    if (snprintf(copy, sizeof copy, "%s", dest) >= (int)sizeof copy) {
        fprintf(stderr, "sluice %s: %s: path too long\n", cmd, dest);
        return -1;
    }
    char *base = basename(copy);
    char dircopy[PATH_MAX];
    snprintf(dircopy, sizeof dircopy, "%s", dest);
    const char *dir = dirname(dircopy);
    if (snprintf(o->tmp, sizeof o->tmp, "%s/.%s.XXXXXX", dir, base) >= (int)sizeof o->tmp) {
        fprintf(stderr, "sluice %s: %s: path too long\n", cmd, dest);
        return -1;
    }
    o->buf = malloc(WRITE_BUF);
    o->fd = o->buf ? mkostemp(o->tmp, O_CLOEXEC) : -1;
    if (o->fd < 0) {
        fprintf(stderr, "sluice %s: cannot create a file next to %s: %s\n", cmd, dest,
                strerror(errno));
        free(o->buf);
        o->buf = NULL;
        return -1;
    }
    return 0;
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int out_flush(cli_out *o)
{
    if (o->len > 0 && write_all(o->fd, o->buf, o->len) != 0) {
        o->failed_errno = errno;
        return -1;
    }
    o->len = 0;
    return 0;
}

int cli_out_write(void *arg, const void *p, size_t n)
{
    cli_out *o = arg;
    if (o->len + n > WRITE_BUF && out_flush(o) != 0)
        return -1;
    if (n >= WRITE_BUF) {
        if (write_all(o->fd, p, n) != 0) {
            o->failed_errno = errno;
            return -1;
        }
        return 0;
    }
    memcpy(o->buf + o->len, p, n);
    o->len += n;
    return 0;
}

void cli_out_abort(cli_out *o)
{
    if (o->fd >= 0) {
        close(o->fd);
        unlink(o->tmp);
    }
    o->fd = -1;
    free(o->buf);
    o->buf = NULL;
}

static int fsync_dir(const char *dest)
{
    char copy[PATH_MAX];
    snprintf(copy, sizeof copy, "%s", dest);
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

int cli_out_commit(cli_out *o)
{
    if (out_flush(o) != 0 || fchmod(o->fd, 0644) != 0 || fsync(o->fd) != 0) {
        fprintf(stderr, "sluice %s: writing %s: %s\n", o->cmd, o->dest,
                strerror(o->failed_errno ? o->failed_errno : errno));
        cli_out_abort(o);
        return -1;
    }
    close(o->fd);
    o->fd = -1;
    free(o->buf);
    o->buf = NULL;
    if (rename(o->tmp, o->dest) != 0) {
        fprintf(stderr, "sluice %s: renaming to %s: %s\n", o->cmd, o->dest, strerror(errno));
        unlink(o->tmp);
        return -1;
    }
    fsync_dir(o->dest);
    return 0;
}

int cli_write_file(const char *cmd, const char *dest, const void *p, size_t n)
{
    cli_out o;
    if (cli_out_open(&o, cmd, dest) != 0)
        return -1;
    if (n > 0 && cli_out_write(&o, p, n) != 0) {
        fprintf(stderr, "sluice %s: writing %s: %s\n", cmd, dest, strerror(o.failed_errno));
        cli_out_abort(&o);
        return -1;
    }
    return cli_out_commit(&o);
}
