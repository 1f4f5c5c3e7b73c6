/*
 * tbuf.h — a growable byte buffer for the delta unit tests: collecting a
 * codec's output and reading test data files (static functions, included
 * by each test that needs them; cmocka's asserts on allocation failure).
 */
#ifndef SLUICE_TESTS_TBUF_H
#define SLUICE_TESTS_TBUF_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    uint8_t *p;
    size_t len, cap;
} buf;

static inline void buf_append(buf *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

/* The whole file at path (the test fails if it cannot be read). */
static inline buf slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    buf b = {0};
    uint8_t tmp[65536];
    size_t n;
    while ((n = fread(tmp, 1, sizeof tmp, f)) > 0)
        buf_append(&b, tmp, n);
    fclose(f);
    return b;
}

#endif
