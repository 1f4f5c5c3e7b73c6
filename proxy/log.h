/*
 * log.h — structured log lines on stderr, logfmt style:
 *   ts=2026-11-26T00:25:14.123Z level=info component=request method=GET ...
 * One write(2) per line, so lines from different threads never interleave.
 */
#ifndef SLUICE_LOG_H
#define SLUICE_LOG_H

#if defined(__GNUC__)
#define LOG_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define LOG_PRINTF(a, b)
#endif

void log_info(const char *component, const char *fmt, ...) LOG_PRINTF(2, 3);
void log_warn(const char *component, const char *fmt, ...) LOG_PRINTF(2, 3);
void log_error(const char *component, const char *fmt, ...) LOG_PRINTF(2, 3);

#endif
