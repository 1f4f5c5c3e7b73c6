/*
 * dl_curl.c — the libcurl functions Sluice calls, loaded from libcurl.so.4 at
 * the first call rather than linked (see dl_libs.h for why and how).
 *
 * Each function below has libcurl's own name and signature and forwards to the
 * pointer dl_lib_ready() resolved, or returns the function's failure value if
 * libcurl could not be loaded (curl_global_init: CURLE_FAILED_INIT, then
 * dl_curl_error() says why). Call sites keep curl's compile-time option type
 * checks (typecheck-gcc.h); this file turns them off, since it defines the
 * functions those macros wrap. The variadic setopt functions read their third
 * argument the way libcurl does, by the option number's type range: below
 * CURLOPTTYPE_OBJECTPOINT a long; below CURLOPTTYPE_FUNCTIONPOINT an object,
 * string, slist or callback-data pointer; below CURLOPTTYPE_OFF_T a function
 * pointer; below CURLOPTTYPE_BLOB a curl_off_t; from there a struct curl_blob
 * pointer. curl_easy_getinfo always takes a pointer.
 */
#define CURL_DISABLE_TYPECHECK
#include <curl/curl.h>
#include <stdarg.h>

#include "dl_libs.h"

#ifndef SLUICE_LIBCURL_SONAME
#define SLUICE_LIBCURL_SONAME "libcurl.so.4"
#endif

#define CURL_SYMS(X)                                                                               \
    X(curl_global_init)                                                                            \
    X(curl_global_cleanup)                                                                         \
    X(curl_easy_init)                                                                              \
    X(curl_easy_cleanup)                                                                           \
    X(curl_easy_setopt)                                                                            \
    X(curl_easy_getinfo)                                                                           \
    X(curl_easy_perform)                                                                           \
    X(curl_easy_pause)                                                                             \
    X(curl_easy_header)                                                                            \
    X(curl_easy_strerror)                                                                          \
    X(curl_easy_escape)                                                                            \
    X(curl_free)                                                                                   \
    X(curl_slist_append)                                                                           \
    X(curl_slist_free_all)                                                                         \
    X(curl_multi_init)                                                                             \
    X(curl_multi_cleanup)                                                                          \
    X(curl_multi_setopt)                                                                           \
    X(curl_multi_add_handle)                                                                       \
    X(curl_multi_remove_handle)                                                                    \
    X(curl_multi_assign)                                                                           \
    X(curl_multi_socket_action)                                                                    \
    X(curl_multi_info_read)

DL_SHIM(CURL_SYMS, "libcurl", SLUICE_LIBCURL_SONAME, dl_curl_error)

/* A function pointer passed through `...`, as libcurl reads it back. */
typedef void (*any_fn)(void);

/* setopt(handle, option, x) with x read from `ap` as the option's type range
 * says (the way libcurl's own setopt reads it); for the easy and the multi
 * interface alike (no multi option is in the BLOB range). */
#define SETOPT_BY_TYPE(setopt, handle, option, ap)                                                 \
    ((option) < CURLOPTTYPE_OBJECTPOINT     ? setopt(handle, option, va_arg(ap, long))             \
     : (option) < CURLOPTTYPE_FUNCTIONPOINT ? setopt(handle, option, va_arg(ap, void *))           \
     : (option) < CURLOPTTYPE_OFF_T         ? setopt(handle, option, va_arg(ap, any_fn))           \
     : (option) < CURLOPTTYPE_BLOB          ? setopt(handle, option, va_arg(ap, curl_off_t))       \
                                   : setopt(handle, option, va_arg(ap, struct curl_blob *)))

/* ---- global ---- */

CURLcode curl_global_init(long flags)
{
    return ready() ? fn.curl_global_init(flags) : CURLE_FAILED_INIT;
}

void curl_global_cleanup(void)
{
    if (ready())
        fn.curl_global_cleanup();
}

/* ---- easy ---- */

CURL *curl_easy_init(void)
{
    return ready() ? fn.curl_easy_init() : NULL;
}

void curl_easy_cleanup(CURL *curl)
{
    if (ready())
        fn.curl_easy_cleanup(curl);
}

CURLcode curl_easy_setopt(CURL *curl, CURLoption option, ...)
{
    if (!ready())
        return CURLE_FAILED_INIT;
    va_list ap;
    va_start(ap, option);
    CURLcode rc = SETOPT_BY_TYPE(fn.curl_easy_setopt, curl, option, ap);
    va_end(ap);
    return rc;
}

CURLcode curl_easy_getinfo(CURL *curl, CURLINFO info, ...)
{
    if (!ready())
        return CURLE_FAILED_INIT;
    va_list ap;
    va_start(ap, info);
    CURLcode rc = fn.curl_easy_getinfo(curl, info, va_arg(ap, void *));
    va_end(ap);
    return rc;
}

CURLcode curl_easy_perform(CURL *curl)
{
    return ready() ? fn.curl_easy_perform(curl) : CURLE_FAILED_INIT;
}

CURLcode curl_easy_pause(CURL *handle, int bitmask)
{
    return ready() ? fn.curl_easy_pause(handle, bitmask) : CURLE_FAILED_INIT;
}

CURLHcode curl_easy_header(CURL *easy, const char *name, size_t index, unsigned int origin,
                           int request, struct curl_header **hout)
{
    return ready() ? fn.curl_easy_header(easy, name, index, origin, request, hout)
                   : CURLHE_NOT_BUILT_IN;
}

const char *curl_easy_strerror(CURLcode code)
{
    return ready() ? fn.curl_easy_strerror(code) : dl_curl_error("libcurl is not loaded");
}

char *curl_easy_escape(CURL *handle, const char *string, int length)
{
    return ready() ? fn.curl_easy_escape(handle, string, length) : NULL;
}

void curl_free(void *p)
{
    if (ready())
        fn.curl_free(p);
}

struct curl_slist *curl_slist_append(struct curl_slist *list, const char *data)
{
    return ready() ? fn.curl_slist_append(list, data) : NULL;
}

void curl_slist_free_all(struct curl_slist *list)
{
    if (ready())
        fn.curl_slist_free_all(list);
}

/* ---- multi ---- */

CURLM *curl_multi_init(void)
{
    return ready() ? fn.curl_multi_init() : NULL;
}

CURLMcode curl_multi_cleanup(CURLM *multi_handle)
{
    return ready() ? fn.curl_multi_cleanup(multi_handle) : CURLM_BAD_HANDLE;
}

CURLMcode curl_multi_setopt(CURLM *multi_handle, CURLMoption option, ...)
{
    if (!ready())
        return CURLM_BAD_HANDLE;
    va_list ap;
    va_start(ap, option);
    CURLMcode rc = SETOPT_BY_TYPE(fn.curl_multi_setopt, multi_handle, option, ap);
    va_end(ap);
    return rc;
}

CURLMcode curl_multi_add_handle(CURLM *multi_handle, CURL *curl_handle)
{
    return ready() ? fn.curl_multi_add_handle(multi_handle, curl_handle) : CURLM_BAD_HANDLE;
}

CURLMcode curl_multi_remove_handle(CURLM *multi_handle, CURL *curl_handle)
{
    return ready() ? fn.curl_multi_remove_handle(multi_handle, curl_handle) : CURLM_BAD_HANDLE;
}

CURLMcode curl_multi_assign(CURLM *multi_handle, curl_socket_t sockfd, void *sockp)
{
    return ready() ? fn.curl_multi_assign(multi_handle, sockfd, sockp) : CURLM_BAD_HANDLE;
}

CURLMcode curl_multi_socket_action(CURLM *multi_handle, curl_socket_t s, int ev_bitmask,
                                   int *running_handles)
{
    return ready() ? fn.curl_multi_socket_action(multi_handle, s, ev_bitmask, running_handles)
                   : CURLM_BAD_HANDLE;
}

CURLMsg *curl_multi_info_read(CURLM *multi_handle, int *msgs_in_queue)
{
    return ready() ? fn.curl_multi_info_read(multi_handle, msgs_in_queue) : NULL;
}
