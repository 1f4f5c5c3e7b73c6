/*
 * fuzz_config.c — libFuzzer target for the configuration loader
 * (proxy/config.c on top of libinih) and its value parsers.
 *
 * How it works: config_load_file() takes a path, so each input is written to
 * a memfd (created once) and loaded through /proc/self/fd/N; the result is
 * validated, queried and freed, so LeakSanitizer sees any string the loader
 * loses. The same bytes, split at NULs as "section\0key\0value", also go
 * through config_set() the way command-line overrides do, and whole through
 * the size, duration and boolean parsers. The target aborts when a loaded
 * config breaks config.h's promises (too many upstreams, the default not
 * first, an error without its message).
 *
 * Run: build with -Dfuzz=true (see meson.build here), then
 *   ./fuzz_config -dict=tests/fuzz/config.dict tests/fuzz/corpus/fuzz_config
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <unistd.h>

#include "config.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

/* The memfd holding the current input, and its /proc path. */
static const char *input_file(const uint8_t *data, size_t size)
{
    static int fd = -1;
    static char path[64];
    if (fd < 0) {
        fd = memfd_create("sluice-fuzz-config", MFD_CLOEXEC);
        CHECK(fd >= 0);
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    }
    CHECK(ftruncate(fd, 0) == 0);
    CHECK(size == 0 || pwrite(fd, data, size, 0) == (ssize_t)size);
    return path;
}

static void check_loaded(const config *cfg)
{
    CHECK(cfg->n_upstreams <= CONFIG_MAX_UPSTREAMS);
    for (unsigned i = 0; i < cfg->n_upstreams; i++) {
        CHECK(cfg->upstreams[i].name != NULL);
        CHECK(i == 0 || cfg->upstreams[i].name[0] != '\0');
        CHECK(config_upstream_for(cfg, cfg->upstreams[i].name) == &cfg->upstreams[i]);
    }
    char err[256] = "";
    if (config_validate(cfg, err, sizeof err) != 0) {
        CHECK(err[0] != '\0');
        return;
    }
    for (unsigned i = 0; i < cfg->n_upstreams; i++)
        CHECK(strncasecmp(cfg->upstreams[i].url, "http", 4) == 0);
    CHECK((cfg->tls_cert == NULL) == (cfg->tls_key == NULL));
}

static void fuzz_file(const uint8_t *data, size_t size)
{
    config cfg;
    char err[512] = "";
    config_init(&cfg);
    if (config_load_file(&cfg, input_file(data, size), err, sizeof err) == 0)
        check_loaded(&cfg);
    else
        CHECK(strncmp(err, "/proc/self/fd/", 14) == 0);
    config_free(&cfg);
}

/* "section\0key\0value" (missing parts are empty), as a command line would
 * set them; text is NUL-terminated. */
static void fuzz_set(const char *text, size_t len)
{
    const char *section = text;
    const char *key = section + strlen(section);
    key += key < text + len ? 1 : 0;
    const char *value = key + strlen(key);
    value += value < text + len ? 1 : 0;
    config cfg;
    char err[128];
    config_init(&cfg);
    if (config_set(&cfg, section, key, value, "--fuzz", err, sizeof err) != 0)
        CHECK(strncmp(err, "--fuzz: ", 8) == 0);
    config_validate(&cfg, err, sizeof err);
    config_free(&cfg);
}

static void fuzz_values(const char *text)
{
    uint64_t size;
    unsigned secs;
    int b = -1;
    if (config_parse_size(text, &size) == 0)
        CHECK(text[0] >= '0' && text[0] <= '9');
    if (config_parse_duration(text, &secs) == 0)
        CHECK(text[0] >= '0' && text[0] <= '9');
    if (config_parse_bool(text, &b) == 0)
        CHECK(b == 0 || b == 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_file(data, size);
    char *text = malloc(size + 1);
    CHECK(text != NULL);
    if (size > 0)
        memcpy(text, data, size);
    text[size] = '\0';
    fuzz_set(text, size);
    fuzz_values(text);
    free(text);
    return 0;
}
