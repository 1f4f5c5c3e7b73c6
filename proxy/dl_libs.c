/*
 * dl_libs.c — loads a library for dl_curl.c or dl_archive.c (see dl_libs.h):
 * dlopen of its soname, dlsym of every symbol in its table into the shim's
 * struct of function pointers, once per process.
 *
 * The first caller takes the library's mutex and loads; the state is
 * published with release order after the pointers are written, so a thread
 * that reads state 1 (acquire) also sees every pointer. A failure is final:
 * the handle is closed, the reason kept, and no pointer is called afterwards.
 */
#include "dl_libs.h"

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

/* dlsym returns a data pointer; POSIX guarantees that it converts to a
 * function pointer. memcpy below copies the representation. */
_Static_assert(sizeof(void *) == sizeof(void (*)(void)), "function pointers are data-sized");

static int load(dl_lib *lib)
{
    void *h = dlopen(lib->soname, RTLD_NOW | RTLD_LOCAL);
    if (h == NULL) {
        const char *why = dlerror();
        snprintf(lib->error, sizeof(lib->error), "cannot load %s: %s", lib->name,
                 why ? why : lib->soname);
        return -1;
    }
    for (size_t i = 0; i < lib->nsyms; i++) {
        dlerror();
        void *p = dlsym(h, lib->syms[i].name);
        const char *why = dlerror();
        if (p == NULL || why != NULL) {
            if (why != NULL)
                snprintf(lib->error, sizeof(lib->error), "cannot load %s: %s", lib->name, why);
            else
                snprintf(lib->error, sizeof(lib->error), "cannot load %s: %s: no symbol %s",
                         lib->name, lib->soname, lib->syms[i].name);
            dlclose(h);
            return -1;
        }
        memcpy((char *)lib->fns + lib->syms[i].offset, &p, sizeof(p));
    }
    return 1;
}

int dl_lib_ready(dl_lib *lib)
{
    int state = atomic_load_explicit(&lib->state, memory_order_acquire);
    if (state == 0) {
        pthread_mutex_lock(&lib->mu);
        state = atomic_load_explicit(&lib->state, memory_order_relaxed);
        if (state == 0) {
            state = load(lib);
            atomic_store_explicit(&lib->state, state, memory_order_release);
        }
        pthread_mutex_unlock(&lib->mu);
    }
    return state > 0;
}

const char *dl_lib_error(dl_lib *lib, const char *otherwise)
{
    return atomic_load_explicit(&lib->state, memory_order_acquire) < 0 ? lib->error : otherwise;
}
