/*
 * check.h - the C unit tests' assertion.  CHECK() counts each check and
 * reports a failed one with its file:line; main ends with
 * `return check_summary();`, which prints "N passed, M failed" and gives
 * the exit status (non-zero on any failure, as meson test expects).
 * Plain C, no framework; included by one test program each.
 */
#ifndef ONEBOX_TESTS_CHECK_H
#define ONEBOX_TESTS_CHECK_H

#include <stdio.h>

static int passed, failed;

#define CHECK(cond)                                                          \
	do {                                                                 \
		if (cond) {                                                  \
			passed++;                                            \
		} else {                                                     \
			failed++;                                            \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, \
			        __LINE__, #cond);                            \
		}                                                            \
	} while (0)

static inline int check_summary(void)
{
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}

#endif
