/*
 * test_dl_libs.c — unit tests for proxy/dl_libs.c, dl_curl.c and dl_archive.c:
 * a library or symbol that cannot be loaded fails once, for good, with
 * dlerror()'s text and no pointer to call; the libcurl and libarchive shims
 * load the real libraries and forward every kind of argument (setopt's long,
 * pointer, function pointer and curl_off_t; a tar written and read back).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <archive.h>
#include <archive_entry.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dl_libs.h"

struct libc_fns {
    __typeof__(&strlen) strlen;
    __typeof__(&strcmp) strcmp;
};

static struct libc_fns fns;

/* Loads `soname` and its `syms` into fns as a fresh dl_lib, twice (the
 * second call must answer as the first, without loading again); returns
 * whether it loaded, and dl_lib_error's text in `why`. */
static int load_twice(const char *soname, const dl_sym *syms, size_t n, char *why, size_t len)
{
    memset(&fns, 0, sizeof(fns));
    dl_lib lib = {.name = "libtest", .soname = soname, .syms = syms, .nsyms = n, .fns = &fns};
    pthread_mutex_init(&lib.mu, NULL);
    assert_string_equal(dl_lib_error(&lib, "not tried"), "not tried");
    int loaded = dl_lib_ready(&lib);
    assert_int_equal(dl_lib_ready(&lib), loaded);
    snprintf(why, len, "%s", dl_lib_error(&lib, "loaded"));
    pthread_mutex_destroy(&lib.mu);
    return loaded;
}

static void missing_library_fails_with_dlerror(void **state)
{
    (void)state;
    static const dl_sym syms[] = {{"strlen", offsetof(struct libc_fns, strlen)}};
    char why[512];
    assert_int_equal(load_twice("libsluice-no-such-library.so.0", syms, 1, why, sizeof(why)), 0);
    assert_non_null(strstr(why, "cannot load libtest: "));
    assert_non_null(strstr(why, "libsluice-no-such-library.so.0"));
    assert_null(fns.strlen);
}

static void missing_symbol_fails_with_its_name(void **state)
{
    (void)state;
    static const dl_sym syms[] = {{"strlen", offsetof(struct libc_fns, strlen)},
                                  {"sluice_no_such_symbol", offsetof(struct libc_fns, strcmp)}};
    char why[512];
    assert_int_equal(load_twice("libc.so.6", syms, 2, why, sizeof(why)), 0);
    assert_non_null(strstr(why, "sluice_no_such_symbol"));
}

static void every_symbol_resolves(void **state)
{
    (void)state;
    static const dl_sym syms[] = {{"strlen", offsetof(struct libc_fns, strlen)},
                                  {"strcmp", offsetof(struct libc_fns, strcmp)}};
    char why[512];
    assert_int_equal(load_twice("libc.so.6", syms, 2, why, sizeof(why)), 1);
    assert_string_equal(why, "loaded");
    assert_int_equal(fns.strlen("sluice"), 6);
    assert_int_equal(fns.strcmp("a", "a"), 0);
}

static size_t discard(char *p, size_t size, size_t n, void *arg)
{
    (void)p;
    (void)arg;
    return size * n;
}

static void curl_shim_forwards_every_argument_kind(void **state)
{
    (void)state;
    assert_int_equal(curl_global_init(CURL_GLOBAL_DEFAULT), CURLE_OK);
    assert_string_equal(dl_curl_error("loaded"), "loaded");
    CURL *e = curl_easy_init();
    assert_non_null(e);
    assert_int_equal(curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L), CURLE_OK);
    assert_int_equal(curl_easy_setopt(e, CURLOPT_URL, "http://127.0.0.1:1/"), CURLE_OK);
    assert_int_equal(curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard), CURLE_OK);
    assert_int_equal(curl_easy_setopt(e, CURLOPT_MAX_RECV_SPEED_LARGE, (curl_off_t)1 << 20),
                     CURLE_OK);
    assert_int_equal(curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "no-such-protocol"),
                     CURLE_UNSUPPORTED_PROTOCOL); /* the string reached libcurl */
    struct curl_slist *h = curl_slist_append(NULL, "Accept: */*");
    assert_non_null(h);
    assert_int_equal(curl_easy_setopt(e, CURLOPT_HTTPHEADER, h), CURLE_OK);
    char *esc = curl_easy_escape(e, "a b", 0);
    assert_string_equal(esc, "a%20b");
    curl_free(esc);
    long code = -1;
    assert_int_equal(curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code), CURLE_OK);
    assert_int_equal(code, 0);
    assert_string_equal(curl_easy_strerror(CURLE_OK), "No error");
    curl_easy_cleanup(e);
    curl_slist_free_all(h);

    CURLM *m = curl_multi_init();
    assert_non_null(m);
    assert_int_equal(curl_multi_setopt(m, CURLMOPT_MAX_HOST_CONNECTIONS, 4L), CURLM_OK);
    assert_int_equal(curl_multi_cleanup(m), CURLM_OK);
    curl_global_cleanup();
}

static void archive_shim_writes_and_reads_a_tar(void **state)
{
    (void)state;
    char path[] = "/tmp/sluice-test-dl-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    struct archive *w = archive_write_new();
    assert_non_null(w);
    assert_string_equal(dl_archive_error("loaded"), "loaded");
    assert_int_equal(archive_write_set_format_pax_restricted(w), ARCHIVE_OK);
    assert_int_equal(archive_write_open_fd(w, fd), ARCHIVE_OK);
    struct archive_entry *e = archive_entry_new();
    archive_entry_set_pathname(e, "index.json");
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, 0644);
    archive_entry_set_size(e, 2);
    archive_entry_set_mtime(e, 0, 0);
    assert_int_equal(archive_write_header(w, e), ARCHIVE_OK);
    archive_entry_free(e);
    assert_int_equal(archive_write_data(w, "{}", 2), 2);
    assert_int_equal(archive_write_close(w), ARCHIVE_OK);
    assert_int_equal(archive_write_free(w), ARCHIVE_OK);
    close(fd);

    struct archive *r = archive_read_new();
    assert_non_null(r);
    archive_read_support_filter_all(r);
    archive_read_support_format_tar(r);
    assert_int_equal(archive_read_open_filename(r, path, 10240), ARCHIVE_OK);
    assert_int_equal(archive_read_next_header(r, &e), ARCHIVE_OK);
    assert_string_equal(archive_entry_pathname(e), "index.json");
    assert_int_equal(archive_entry_filetype(e), AE_IFREG);
    assert_true(archive_entry_size_is_set(e));
    assert_int_equal(archive_entry_size(e), 2);
    char buf[8];
    assert_int_equal(archive_read_data(r, buf, sizeof(buf)), 2);
    assert_memory_equal(buf, "{}", 2);
    assert_int_equal(archive_read_next_header(r, &e), ARCHIVE_EOF);
    assert_true(archive_filter_bytes(r, -1) > 0);
    assert_int_equal(archive_read_free(r), ARCHIVE_OK);
    unlink(path);

    r = archive_read_new();
    assert_non_null(r);
    archive_read_support_format_tar(r);
    assert_int_equal(archive_read_open_filename(r, path, 10240), ARCHIVE_FATAL);
    assert_non_null(strstr(archive_error_string(r), "sluice-test-dl-"));
    archive_read_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(missing_library_fails_with_dlerror),
        cmocka_unit_test(missing_symbol_fails_with_its_name),
        cmocka_unit_test(every_symbol_resolves),
        cmocka_unit_test(curl_shim_forwards_every_argument_kind),
        cmocka_unit_test(archive_shim_writes_and_reads_a_tar),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
