/*
 * test_delta_cli.c — tests for `sluice delta` (proxy/cmd_delta.c): create
 * and apply with every codec on a real module pair, auto choosing the
 * smallest, files readable by the zstd and xdelta3 programs, atomic output
 * (a failed apply leaves neither the output nor a temporary file behind and
 * does not touch an existing output), and usage errors.
 *
 * Run with arguments starting with "delta", this binary is that command
 * (`test_delta_cli delta create ...`), which lets bench/delta.sh drive the
 * CLI before it is wired into the sluice binary.
 */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../proxy/cmd_delta.h"

static char dir[64];
static char cwd[512];

static int run(const char *fmt, ...)
{
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    char *argv[32];
    int argc = 0;
    for (char *tok = strtok(line, " "); tok && argc < 31; tok = strtok(NULL, " "))
        argv[argc++] = tok;
    argv[argc] = NULL;
    return cmd_delta(argc, argv);
}

static long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

static int same_file(const char *a, const char *b)
{
    char cmd[2400];
    snprintf(cmd, sizeof cmd, "cmp -s %s %s", a, b);
    return system(cmd) == 0;
}

/* Files in dir other than the ones the test made on purpose. */
static int stray_files(void)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        n += e->d_name[0] == '.' && strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return n;
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/sluice-cli-XXXXXX");
    assert_non_null(mkdtemp(dir));
    assert_non_null(getcwd(cwd, sizeof cwd));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

#define OLD "%s/data/modules/nvme-core/old.ko"
#define NEW "%s/data/modules/nvme-core/new.ko"

static void test_create_apply_each_codec(void **state)
{
    (void)state;
    static const char *const codecs[] = {"zstd", "vcdiff", "bsz", "auto"};
    long sizes[4];
    for (int i = 0; i < 4; i++) {
        assert_int_equal(run("delta create --from " OLD " --to " NEW " -o %s/d.%s --codec %s", cwd,
                             cwd, dir, codecs[i], codecs[i]),
                         0);
        char d[128], out[128], ref[1100];
        snprintf(d, sizeof d, "%s/d.%s", dir, codecs[i]);
        snprintf(out, sizeof out, "%s/out.%s", dir, codecs[i]);
        snprintf(ref, sizeof ref, NEW, cwd);
        sizes[i] = file_size(d);
        assert_true(sizes[i] > 0);
        assert_int_equal(run("delta apply --from " OLD " -o %s %s", cwd, out, d), 0);
        assert_true(same_file(out, ref));
    }
    /* auto is the smallest, here bsz */
    assert_int_equal(sizes[3], sizes[2]);
    assert_true(sizes[2] < sizes[0] && sizes[2] < sizes[1]);
    /* the files are what the standard tools read */
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "cd %s && tail -c +41 d.zstd > f.zst && zstd -q -d --patch-from=" OLD
             " --long=31 f.zst -o z.out && cmp -s z.out " NEW " && xdelta3 -d -s " OLD
             " d.vcdiff x.out && cmp -s x.out " NEW,
             dir, cwd, cwd, cwd, cwd);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(stray_files(), 0);
}

static void test_failed_apply_leaves_nothing(void **state)
{
    (void)state;
    assert_int_equal(
        run("delta create --from " OLD " --to " NEW " -o %s/d.bsz --codec bsz", cwd, cwd, dir), 0);
    char d[128], cmd[512];
    snprintf(d, sizeof d, "%s/d.bsz", dir);
    /* truncate the delta */
    snprintf(cmd, sizeof cmd, "head -c 3000 %s > %s/t.bsz", d, dir);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(run("delta apply --from " OLD " -o %s/never %s/t.bsz", cwd, dir, dir), 1);
    char never[128];
    snprintf(never, sizeof never, "%s/never", dir);
    assert_int_equal(file_size(never), -1);
    /* wrong base: bsz checks its CRC-64, dcz the SHA-256 in its header */
    assert_int_equal(run("delta apply --from " NEW " -o %s/never %s", cwd, dir, d), 1);
    assert_int_equal(file_size(never), -1);
    assert_int_equal(
        run("delta create --from " OLD " --to " NEW " -o %s/d.zstd --codec zstd", cwd, cwd, dir),
        0);
    assert_int_equal(run("delta apply --from " NEW " -o %s/never %s/d.zstd", cwd, dir, dir), 1);
    assert_int_equal(file_size(never), -1);
    /* an existing output survives a failed apply untouched */
    snprintf(cmd, sizeof cmd, "echo keep > %s/keep", dir);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(run("delta apply --from " OLD " -o %s/keep %s/t.bsz", cwd, dir, dir), 1);
    char keep[128];
    snprintf(keep, sizeof keep, "%s/keep", dir);
    assert_int_equal(file_size(keep), 5);
    assert_int_equal(stray_files(), 0);
    /* missing inputs */
    assert_int_equal(run("delta apply --from /nonexistent -o %s/never %s", dir, d), 1);
    assert_int_equal(run("delta create --from " OLD " --to /nonexistent -o %s/never", cwd, dir), 1);
    assert_int_equal(file_size(never), -1);
}

static void test_usage(void **state)
{
    (void)state;
    assert_int_equal(run("delta"), 2);
    assert_int_equal(run("delta frobnicate"), 2);
    assert_int_equal(run("delta create --from a --to b"), 2);
    assert_int_equal(run("delta create --from a --to b -o c --codec gzip"), 2);
    assert_int_equal(run("delta create --from a --to b -o c --level 99"), 2);
    assert_int_equal(run("delta apply --from a -o b"), 2);
    assert_int_equal(run("delta apply --from a -o b x y"), 2);
    assert_int_equal(run("delta help"), 0);
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "delta") == 0)
        return cmd_delta(argc - 1, argv + 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_apply_each_codec),
        cmocka_unit_test(test_failed_apply_leaves_nothing),
        cmocka_unit_test(test_usage),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
