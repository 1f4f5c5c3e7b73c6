/*
 * test_pending.c — unit tests for proxy/pending.c, the table of decisions
 * that trust verdicts and deltas wait on: pending_peek answers only decided
 * keys of the current generation, never starts or joins a decision, and
 * leaves pending_ask's first/waiting/done protocol as it was.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <event2/event.h>
#include <string.h>

#include "pending.h"

static void peek_sees_only_decisions(void **state)
{
    (void)state;
    pending_table *t = pending_new();
    int result = -1;
    uint64_t gen = 0;
    char why[64] = "";
    assert_int_equal(pending_peek(t, "k", &result, why, sizeof(why)), 0);
    assert_int_equal(pending_ask(t, "k", NULL, &result, why, sizeof(why), &gen), PENDING_FIRST);
    assert_int_equal(pending_peek(t, "k", &result, why, sizeof(why)), 0); /* being decided */
    assert_int_equal(pending_ask(t, "k", NULL, &result, why, sizeof(why), &gen), PENDING_WAITING);
    pending_decide(t, "k", gen, 1, "allowed by scope x");
    result = -1;
    assert_int_equal(pending_peek(t, "k", &result, why, sizeof(why)), 1);
    assert_int_equal(result, 1);
    assert_string_equal(why, ""); /* a reason goes with denials only */
    assert_int_equal(pending_ask(t, "d", NULL, &result, why, sizeof(why), &gen), PENDING_FIRST);
    pending_decide(t, "d", gen, 0, "no signature");
    assert_int_equal(pending_peek(t, "d", &result, why, sizeof(why)), 1);
    assert_int_equal(result, 0);
    assert_string_equal(why, "no signature");
    assert_int_equal(pending_peek(t, "other", &result, NULL, 0), 0); /* never creates an entry */
    assert_int_equal(pending_ask(t, "other", NULL, &result, NULL, 0, &gen), PENDING_FIRST);
    pending_free(t);
}

static void peek_forgets_with_the_generation(void **state)
{
    (void)state;
    pending_table *t = pending_new();
    int result = 0;
    uint64_t gen = 0;
    char why[64];
    pending_ask(t, "k", NULL, &result, why, sizeof(why), &gen);
    pending_decide(t, "k", gen, 0, "denied");
    assert_int_equal(pending_peek(t, "k", &result, why, sizeof(why)), 1);
    assert_int_equal(result, 0);
    pending_clear(t);
    assert_int_equal(pending_peek(t, "k", &result, why, sizeof(why)), 0);
    pending_decide(t, "k", gen, 1, "late"); /* an old generation's decision is dropped */
    assert_int_equal(pending_peek(t, "k", &result, why, sizeof(why)), 0);
    pending_ask(t, "k", NULL, &result, why, sizeof(why), &gen);
    pending_decide(t, "k", gen, 1, "fresh");
    pending_close(t);
    assert_int_equal(pending_peek(t, "k", &result, why, sizeof(why)), 0); /* closed */
    pending_free(t);
}

static void peek_does_not_wake_or_join(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    pending_table *t = pending_new();
    pending_waiter w = {.wake = event_new(base, -1, 0, NULL, NULL)};
    atomic_init(&w.waiting, 0);
    int result = 0;
    uint64_t gen = 0;
    assert_int_equal(pending_ask(t, "k", &w, &result, NULL, 0, &gen), PENDING_FIRST);
    assert_int_equal(atomic_load(&w.waiting), 1);
    assert_int_equal(pending_peek(t, "k", &result, NULL, 0), 0);
    assert_int_equal(atomic_load(&w.waiting), 1); /* still waiting for the decision */
    pending_decide(t, "k", gen, 1, "ok");
    assert_int_equal(atomic_load(&w.waiting), 0);
    assert_int_equal(pending_peek(t, "k", &result, NULL, 0), 1);
    pending_cancel(t, &w);
    pending_free(t);
    event_free(w.wake);
    event_base_free(base);
}

/* pending_remember: derived decisions land only in the generation they
 * were derived under, and never over an entry someone else owns. */
static void remember_respects_generation_and_owners(void **state)
{
    (void)state;
    pending_table *t = pending_new();
    int result = -1;
    uint64_t gen = pending_generation(t);
    pending_remember(t, "b", gen, 1, "");
    assert_int_equal(pending_peek(t, "b", &result, NULL, 0), 1);
    assert_int_equal(result, 1);

    uint64_t before = pending_generation(t);
    pending_clear(t);
    assert_int_not_equal(pending_generation(t), before);
    pending_remember(t, "stale", before, 1, ""); /* derived under the old policy */
    assert_int_equal(pending_peek(t, "stale", &result, NULL, 0), 0);
    assert_int_equal(pending_peek(t, "b", &result, NULL, 0), 0); /* cleared */

    uint64_t g2 = 0;
    assert_int_equal(pending_ask(t, "owned", NULL, &result, NULL, 0, &g2), PENDING_FIRST);
    pending_remember(t, "owned", g2, 1, ""); /* being decided by its asker */
    assert_int_equal(pending_peek(t, "owned", &result, NULL, 0), 0);
    pending_decide(t, "owned", g2, 0, "denied");
    pending_remember(t, "owned", g2, 1, ""); /* never overwrites a decision */
    assert_int_equal(pending_peek(t, "owned", &result, NULL, 0), 1);
    assert_int_equal(result, 0);
    pending_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(peek_sees_only_decisions),
        cmocka_unit_test(peek_forgets_with_the_generation),
        cmocka_unit_test(peek_does_not_wake_or_join),
        cmocka_unit_test(remember_respects_generation_and_owners),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
