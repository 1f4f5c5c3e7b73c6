/*
 * dl_libs.h — libcurl and libarchive, loaded on first use instead of at start-up.
 *
 * Why. Only some commands use them: libcurl `serve`, `fetch` and `verify REF`;
 * libarchive `seed` and `export`. Linked as NEEDED libraries, they and their
 * dependencies (gnutls, nettle, gmp, ldap, krb5, rtmp, ssh2, libxml2, ...)
 * were mapped and relocated at every start of every command: `ldd` listed 53
 * objects, and `sluice delta help` took 16.5 ms and 11.0 MiB of peak RSS
 * (hyperfine -N; /usr/bin/time %M; release build). Loaded on demand, the
 * commands that never touch them (`delta create/apply` — a small device's
 * decode path —, `stat`, `gc`, file `verify`, `version`) start in 4.6 ms with
 * 4.0 MiB, and `ldd` lists 16.
 *
 * How it works. dl_curl.c and dl_archive.c define the functions Sluice calls
 * under the libraries' own names, so call sites include <curl/curl.h> and
 * <archive.h> and read as they always did, and the executable is not linked
 * with -lcurl or -larchive (meson takes only their headers). Each definition
 * forwards to a typed pointer (__typeof__(&curl_easy_init), so the compiler
 * checks every signature against the real headers). dl_lib_ready() fills the
 * pointers once per process, thread-safely, at the first call of any of them:
 * dlopen of the soname (meson options libcurl_soname, libarchive_soname) with
 * RTLD_NOW | RTLD_LOCAL, then dlsym of every name in the shim's table.
 * Loading is all or nothing: if the library or any one symbol is missing, no
 * pointer is ever called; every forwarder returns its function's failure value
 * (CURLE_FAILED_INIT, NULL, ARCHIVE_FATAL, ...) and dl_curl_error() /
 * dl_archive_error() give the reason, with dlerror()'s text, for the caller's
 * error message. The library is never unloaded.
 *
 * The executable must not export these names (no -rdynamic or
 * --export-dynamic): a loaded library's calls to its own public functions
 * would otherwise bind to the forwarders. `nm -D build/proxy/sluice` shows
 * no curl_ or archive_ definitions.
 */
#ifndef SLUICE_DL_LIBS_H
#define SLUICE_DL_LIBS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>

/* One symbol to resolve: its name, and where its pointer lives in the shim's
 * struct of function pointers. */
typedef struct dl_sym {
    const char *name;
    size_t offset;
} dl_sym;

typedef struct dl_lib {
    const char *name;   /* "libcurl", for messages */
    const char *soname; /* "libcurl.so.4" */
    const dl_sym *syms;
    size_t nsyms;
    void *fns;          /* the shim's struct of function pointers */
    atomic_int state;   /* 0: not tried yet; 1: loaded; -1: failed */
    pthread_mutex_t mu; /* held by the one thread that loads */
    char error[512];    /* why loading failed */
} dl_lib;

/* What a shim declares, given an X-macro SYMS that lists the names it
 * resolves: `struct fns`, one pointer per name typed by the library's own
 * prototype, and `fn`, its instance; the dl_sym table of those names and
 * pointers; `lib`, for the library name_ at soname_; ready(), which loads
 * it on the first call and says whether the pointers may be called; and the
 * public error_fn (dl_curl_error, dl_archive_error). */
#define DL_FN_MEMBER(name) __typeof__(&name) name;
#define DL_FN_SYM(name) {#name, offsetof(struct fns, name)},
#define DL_SHIM(SYMS, name_, soname_, error_fn)                                                    \
    static struct fns {                                                                            \
        SYMS(DL_FN_MEMBER)                                                                         \
    } fn;                                                                                          \
    static const dl_sym syms[] = {SYMS(DL_FN_SYM)};                                                \
    static dl_lib lib = {                                                                          \
        .name = (name_),                                                                           \
        .soname = (soname_),                                                                       \
        .syms = syms,                                                                              \
        .nsyms = sizeof(syms) / sizeof(syms[0]),                                                   \
        .fns = &fn,                                                                                \
        .mu = PTHREAD_MUTEX_INITIALIZER,                                                           \
    };                                                                                             \
    static int ready(void)                                                                         \
    {                                                                                              \
        return dl_lib_ready(&lib);                                                                 \
    }                                                                                              \
    const char *error_fn(const char *otherwise)                                                    \
    {                                                                                              \
        return dl_lib_error(&lib, otherwise);                                                      \
    }

/* Loads the library on the first call (later calls only read its state);
 * 1 if every symbol is resolved, 0 if not (lib->error says why). */
int dl_lib_ready(dl_lib *lib);

/* lib->error if loading failed, else `otherwise`. */
const char *dl_lib_error(dl_lib *lib, const char *otherwise);

/* Why libcurl / libarchive could not be loaded, or `otherwise` if it was
 * loaded (or not tried yet): for the error message of a failed call. */
const char *dl_curl_error(const char *otherwise);
const char *dl_archive_error(const char *otherwise);

#endif
